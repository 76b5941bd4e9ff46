"""Model optimisation for `edgerun optimize`: int8/fp16 conversion, accuracy report, per-target builds."""
