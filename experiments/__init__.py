"""`make results`: the experiments of docs/RESULTS.md, outside the library (it is one study
made with subnet, not part of it). `python -m experiments --help`."""
