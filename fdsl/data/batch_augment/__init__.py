"""The training recipe's augmentation on a batch tensor, with its own parameters for every sample.

Equivalent to timm's training transform (fdsl.data.transforms.train_transform): random resized crop with
random bilinear/bicubic interpolation, flips, RandAugment (``--aa rand-...``) or ColorJitter, normalisation,
random erasing. Written here because the libraries draw one parameter set per call: torchvision's functional
ops take one crop/factor per call, so a batch call gives every image the same crop, and kornia's RandAugment
picks one op sequence per batch. Here every sample draws its own crop, flips, ops, magnitudes and erasing box.

Read in this order:

- ``spec.py``: what the recipe asks for (``AugmentSpec``, ``RandAugmentSpec``), from the flags or by hand.
- ``plan.py``: every sample's random parameters, drawn on the host from a CPU ``torch.Generator`` (cheap, the
  same on every device) into a ``Plan``.
- ``device_params.py``: a ``Plan`` as ``DeviceParams``, the device tensors the device work takes.
- ``geometry.py`` and ``colour_ops.py``: the affine maps and their resampling grid; the colour ops with PIL's
  semantics.
- ``batch.py``: ``BatchAugment``, which runs them: crop, flips and RandAugment's geometric ops (rotate, shear,
  translate) are one affine map per sample, applied by ONE resampling (``grid_sample``), so colour ops act on
  that result (timm applies them in the order drawn; only the fill colour of a geometric op can differ).
  Downscaling is antialiased by averaging s x s sub-samples per output pixel.
- ``folder.py``: ``--gpu-augment`` on image folders: the DataLoader worker's half (``FolderInput``: whole
  decoded uint8 images and their crop boxes) and the training step's half (``DeviceAugment``).

The other caller is ``--synthetic-device`` (rendered batches, fdsl.data.device).
"""
