"""Building blocks shared by several model parts."""
