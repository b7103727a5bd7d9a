"""Command-line interface: maps flags onto library calls, nothing more."""

import click

from hdrprep import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hdrprep")
def main() -> None:
    """Prepare (LDR, HDR) training pairs for single-image HDR reconstruction."""
