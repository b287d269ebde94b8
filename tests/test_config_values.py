"""What the schema lets through is refused when the DAG is built, naming the key: numbers that are not
finite, names with more than their pattern (a final newline), seeds beyond the RNGs' range, sizes a
finite source cannot give, threads beyond this machine (local execution only), an audit that would
re-evaluate nothing."""

import copy

import pytest

from lorarepro.core.config import ConfigError, check_local, validate_schema
from lorarepro.domain.experiment import check


@pytest.mark.parametrize("where, value", [
    (("training", "nlu", "lr"), float("nan")),
    (("methods", "flat_lora_r8", "flat", "rho"), float("inf")),
    (("methods", "lora_r8", "adapter", "alpha"), float("-inf")),
])
def test_a_number_that_is_not_finite_is_refused(params, where, value):
    cfg = copy.deepcopy(params)
    node = cfg
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(ConfigError, match=rf"config key '{'.'.join(where)}': {value} is not a finite number"):
        check(cfg)


def test_a_name_with_a_final_newline_is_refused(params):
    cfg = copy.deepcopy(params)
    cfg["methods"]["lora_r8\n"] = cfg["methods"].pop("lora_r16")
    with pytest.raises(ConfigError, match=r"methods\.'lora_r8\\n'.*is not a name"):
        check(cfg)


def test_seeds_stay_in_the_rngs_range_and_the_audit_reevaluates_something(params):
    for key, value in (("seeds", [0, 2**32]), ("data_seed", 2**32)):
        cfg = {**copy.deepcopy(params), key: value}
        with pytest.raises(ConfigError, match=f"config key '{key}"):
            validate_schema(cfg)
    cfg = copy.deepcopy(params)
    cfg.setdefault("audit", {})["reevaluate"] = 0
    with pytest.raises(ConfigError, match="config key 'audit.reevaluate'"):
        validate_schema(cfg)


def test_sizes_beyond_a_finite_source_are_refused_before_any_job(params):
    cfg = copy.deepcopy(params)
    cfg["tasks"]["digits"]["sizes"] = {"train": 1500, "validation": 100, "test": 700}
    with pytest.raises(ConfigError, match=r"config key 'tasks.digits.sizes': 2300 examples asked, generator 'digits' has \d+"):
        check(cfg)


def test_threads_beyond_this_machine_are_refused_locally(params):
    check_local({**params, "threads": 2}, 2)
    with pytest.raises(ConfigError, match="config key 'threads': 3 threads per job, but this machine has 2 CPUs"):
        check_local({**params, "threads": 3}, 2)
