"""asv benchmarks for fastconv (see asv.conf.json at the repository root)."""
