"""`clustersim capacity`: the highest request rate a layout sustains inside its SLO
(docs/capacity.md)."""
