"""Training (the stages layer): the one optimisation loop (`loop`), resume states (`resume`), the
step's measured memory (`memory`), data-parallel ranks (`ranks`), and one (task, method)'s runs
trained, evaluated and recorded (`train`)."""
