"""Table 9's planned rating cost follows the parallel mode each rater will run with (selectit.models.parallel_mode)."""

import pytest
import yaml

from selectit.paper import tables
from selectit.paper.plan import TENSOR_PARALLEL_EFFICIENCY


def test_planned_gpu_hours_follow_each_raters_parallel_mode(tmp_path):
    """Four raters of the same size, each on 4 GPUs except one: a prepared Llama (tensor parallel, checked on its
    config), a prepared GPT-2 (no tensor-parallel plan: layers split, all 4 GPUs held while one computes), a hub
    id not prepared here (tensor parallel assumed), and one on 1 GPU."""
    from transformers import GPT2Config, LlamaConfig

    LlamaConfig(num_attention_heads=8, num_key_value_heads=4).save_pretrained(tmp_path / "results/models/llama")
    GPT2Config().save_pretrained(tmp_path / "results/models/gpt2")
    models = {"llama": {"hf": "x/llama", "gpus": 4}, "gpt2": {"hf": "x/gpt2", "gpus": 4},
              "hub": {"hf": "x/hub", "gpus": 4}, "one": {"hf": "x/one"}}
    planned_config = tmp_path / "planned.yaml"
    planned_config.write_text(yaml.safe_dump({
        "datasets": {"d": {"hf_name": "x/y"}}, "models": models,
        "paper": {"cost": {"records": {"d": 100}, "thetas": dict.fromkeys(models, 7.0e10)}}}))
    frame = tables.planned_cost(planned_config, tokens_per_row=100.0, root=tmp_path).set_index("Stage")
    hours = {m: frame.loc[f"rate d with {m}", "GPU-hours"] for m in models}
    assert hours["llama"] == pytest.approx(hours["one"] / TENSOR_PARALLEL_EFFICIENCY)
    assert hours["hub"] == pytest.approx(hours["llama"])
    assert hours["gpt2"] == pytest.approx(4 * hours["one"])
    assert frame.loc["rate d with gpt2", "Parallel"] == "layers (4 GPUs, checked on the prepared model)"
    assert frame.loc["rate d with hub", "Parallel"] == "tensor (4 GPUs, assumed: not prepared here)"
    notes = " ".join(tables.table9_efficiency(frame.iloc[:0].reset_index(), frame.reset_index()).attrs["notes"])
    assert "77% of linear scaling (Megatron-LM" in notes  # the efficiency assumed and its source
