"""The PyTorch trainer (optional extra ``hdrprep[train]``): the only part of hdrprep that uses torch.

Entry points: ``hdrprep.train.loop.train`` and ``hdrprep.train.predict.predict``.
Importing this package alone does not import torch; its modules do.
"""
