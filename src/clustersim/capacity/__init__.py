"""`clustersim capacity`: the highest request rate a layout sustains inside its SLO
(docs/capacity.md)."""

CAPACITY_REPLICATES = 3  # default replicates per probe (`capacity` without --replicates)
