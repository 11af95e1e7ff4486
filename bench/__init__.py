"""tocsin's benchmarks: ``python -m bench`` (``make bench``) is the suite of issue #8;
``log_scale.py`` and ``router_throughput.py`` are the narrower studies it builds on."""
