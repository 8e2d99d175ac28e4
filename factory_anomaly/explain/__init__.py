"""How sensors are named to an operator: the one ordering that /v1/explain, the alarm episodes and the
quality benchmark share (numpy only, so serving, training and the benchmarks import the same code)."""
