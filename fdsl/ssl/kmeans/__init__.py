"""Distributed k-means over the rows each rank holds (docs/ssl.md, "What one run does").

Each pass: every rank assigns its rows to the nearest centroid, per-cluster counts and sums are all-reduced,
and the centroids become the means. The last pass only assigns (niter + 1 passes). Any world size works,
1 included; every rank computes the same centroids from the same reduced sums.

  driver.py   kmeans() and its KMeansOptions: the passes
  search.py   the nearest-centroid search (the E-step, nearly all of the time): blas, torch, faiss, faiss-gpu
  empty.py    the empty-cluster rules (fdsl's split, the published one) and the minimum cluster size
  ids.py      global image ids: choices that are the same whichever rank holds an image
"""
