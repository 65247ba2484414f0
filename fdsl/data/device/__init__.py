"""On-the-fly training batches rendered on a device: ``--synthetic DB --synthetic-device cuda`` (or cpu).

No files and no DataLoader workers: each step draws class and instance indices, renders the whole batch
with the torch renderers (fdsl.render.gpu_*), augments it per sample (fdsl.data.batch_augment) and hands
``(images, targets)`` to the loop already on the device.

- ``class_params.py``: class parameters come from the database registry (``Database.class_params``): the same
  per-(seed, class) streams as the CPU renderers, so a class is the same shape on either path. They are
  computed once at start-up, split over the ranks and the ``-j`` processes of each rank.
- ``batches.py``: one ``DeviceBatches`` class per family of databases (the registry's entry names it, as
  ``Database.device_batches``) turns class parameters into the torch renderer's tables and renders a batch.
- ``source.py``: ``DeviceBatchSource``, the loop's loader. Epoch ``e`` is a permutation of the ``classes x
  instances`` indices seeded by (seed, e); rank ``r`` takes every world-th index from ``r`` (with
  ``--repeated-aug``, each index three times in a row before dealing, as fdsl.data.samplers.RASampler). Batch
  ``s`` of epoch ``e`` on rank ``r`` is a pure function of (seed, database seed, e, r, s): its render and
  augmentation generators are seeded from exactly that (fdsl.data.seeds), so a resumed run (``skip``) sees
  the same images. ``create_device_source`` builds it from ``DeviceSourceOptions``.
- ``memory.py``: whether a batch fits in device memory, and the largest that does.
- ``options.py``: the ``--synthetic*`` flags as ``DeviceSourceOptions`` (the command line's edge;
  ``source.build_device_source(args, info)`` goes from the flags to the source).
"""
