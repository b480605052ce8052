"""The model card (`README.md`) of a SELF1E Hub folder, with its YAML metadata and an optional evaluation table.

Evaluation results are read from a JSON file holding a list (or `{"results": [...]}`) of entries such as
`{"dataset": "RefCOCO", "split": "val", "metric": "cIoU", "value": 80.4}`, with an optional `"dataset_id"` (the
dataset's Hub id, for the card's `model-index`).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from transformers_self1e.modeling import Self1EConfig
from transformers_self1e.presets import internvl3_1b_config, internvl3_2b_config, internvl3_8b_config

from .hub_layout import PIPELINE_TASK

TEMPLATE = Path(__file__).with_name("model_card_template.md")
TAGS = ["self1e", "internvl3", "referring-segmentation", "reasoning-segmentation", "custom_code", "arxiv:2603.19026"]
BASE_MODELS = {
    "OpenGVLab/InternVL3-1B": internvl3_1b_config,
    "OpenGVLab/InternVL3-2B": internvl3_2b_config,
    "OpenGVLab/InternVL3-8B": internvl3_8b_config,
}


@dataclass(frozen=True)
class Result:
    """One evaluation number."""

    dataset: str
    split: str
    metric: str
    value: float
    dataset_id: str | None = None


def load_results(path: str | Path) -> list[Result]:
    """Evaluation results from a JSON file (format in the module docstring); raises `FileNotFoundError` without the
    file and `ValueError` naming a file that is not JSON or its bad entries."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no results file at {path}")
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON file of results: {error}") from None
    entries = content.get("results") if isinstance(content, dict) else content
    if not isinstance(entries, list):
        # A malformed file, reported as a ValueError like the other format errors.
        raise ValueError(f"{path}: expected a list of results or {{'results': [...]}}")  # noqa: TRY004
    results = []
    for index, entry in enumerate(entries):
        try:
            results.append(
                Result(
                    dataset=str(entry["dataset"]),
                    split=str(entry.get("split", "test")),
                    metric=str(entry["metric"]),
                    value=float(entry["value"]),
                    dataset_id=entry.get("dataset_id"),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: result {index} needs 'dataset', 'metric' and a numeric 'value' ({error!r})")
    return results


def results_table(results: Sequence[Result]) -> str:
    """A Markdown table: one row per dataset and split, one column per metric (in order of first appearance)."""
    metrics = list(dict.fromkeys(result.metric for result in results))
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for result in results:
        rows.setdefault((result.dataset, result.split), {})[result.metric] = result.value
    lines = ["| dataset | split | " + " | ".join(metrics) + " |", "| --- | --- |" + " ---: |" * len(metrics)]
    for (dataset, split), values in rows.items():
        # As reported: fractions (0.5594) and percentages (81.23) alike keep every digit given.
        cells = [str(values[metric]) if metric in values else "–" for metric in metrics]
        lines.append(f"| {dataset} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def infer_base_model(config: Self1EConfig) -> str | None:
    """The InternVL3 checkpoint whose architecture `config` has, if any."""

    def architecture(candidate: Self1EConfig) -> tuple:
        text, vision = candidate.text_config, candidate.vision_config
        return (
            text.hidden_size,
            text.num_hidden_layers,
            text.intermediate_size,
            vision.hidden_size,
            vision.num_hidden_layers,
        )

    return next((name for name, preset in BASE_MODELS.items() if architecture(preset()) == architecture(config)), None)


def build_model_card(
    config: Self1EConfig,
    repo_id: str,
    parameters: int,
    license: str,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    results: Sequence[Result] = (),
) -> ModelCard:
    """The card of a SELF1E model: metadata (license, library, pipeline tag, base model, tags, datasets,
    `model-index` from `results`), usage of `model.segment` and, where the config offers it (`custom_pipelines`), of
    the pipeline, details, evaluation table."""
    model_name = repo_id.rsplit("/", 1)[-1]
    dataset_ids = list(dict.fromkeys([*datasets, *(result.dataset_id for result in results if result.dataset_id)]))
    eval_results = [
        EvalResult(
            task_type="image-segmentation",
            dataset_type=result.dataset_id or result.dataset,
            dataset_name=result.dataset,
            dataset_split=result.split,
            metric_type=result.metric.lower(),
            metric_name=result.metric,
            metric_value=result.value,
        )
        for result in results
    ]
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TASK,
        base_model=base_model,
        tags=list(TAGS),
        datasets=dataset_ids or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    text, vision = config.text_config, config.vision_config
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        has_pipeline=PIPELINE_TASK in (getattr(config, "custom_pipelines", None) or {}),
        transformers_requirement=f">= {transformers.__version__}",
        tile_size=config.tile_size,
        vision_layers=vision.num_hidden_layers,
        vision_width=vision.hidden_size,
        text_model_type=text.model_type,
        text_layers=text.num_hidden_layers,
        text_width=text.hidden_size,
        parameters=f"{parameters / 1e9:.2f} B" if parameters >= 1e8 else f"{parameters / 1e6:.2f} M",
        dtype=str(config.dtype or "float32").removeprefix("torch."),
        image_feature_path=config.image_feature_path,
        segmentation_attention=config.segmentation_attention,
        seg_token_id=config.seg_token_id,
        results_table=results_table(results) if results else None,
    )


__all__ = ["Result", "build_model_card", "infer_base_model", "load_results", "results_table"]
