from hdrprep.cli import main

main()
