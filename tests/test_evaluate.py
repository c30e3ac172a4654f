"""`python -m helpers evaluate`: the served pipeline over a labelled set, written as COCO JSON, a
per-class table, a confusion matrix with a background row and column, PR curves and a summary."""

import csv
import json

import numpy as np
import pytest

from helpers.data.dataset import SAMPLE_DIR, class_counts
from helpers.evaluate import report
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES
from helpers.runtime.detections import Detections

CLASSES = ClassMap(FRIDGE_CLASSES)


def _targets(records):
    return [
        {
            "boxes": np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4),
            "labels": np.array([CLASSES.id(n) for n in r.labels], dtype=np.int64),
        }
        for r in records
    ]


def _as_predictions(targets):
    return [Detections(t["boxes"], np.linspace(0.9, 0.8, len(t["labels"])), t["labels"]) for t in targets]


def test_perfect_predictions_score_ap_1_and_fill_only_the_diagonal(sample_records):
    targets = _targets(sample_records)
    predictions = _as_predictions(targets)
    truth, results = report.coco_files(sample_records, targets, predictions, CLASSES.names)
    evaluation = report.coco_evaluation(truth, results)
    assert evaluation.stats[0] == pytest.approx(1.0) and evaluation.stats[1] == pytest.approx(1.0)
    matrix = report.confusion_matrix(targets, predictions, 0.5, len(CLASSES.names))
    per_class = {CLASSES.id(name): n for name, n in class_counts(sample_records).items()}
    assert np.array_equal(np.diag(matrix)[1:], [per_class[i] for i in range(1, 5)])
    assert matrix.sum() == sum(per_class.values()) == 12


def test_a_wrong_label_is_a_confusion_and_a_moved_box_a_miss_plus_a_false_alarm(sample_records):
    targets = _targets(sample_records)
    predictions = _as_predictions(targets)
    carton, can = CLASSES.id("carton"), CLASSES.id("can")
    first, second = predictions[0], predictions[1]
    true_label, moved_label = int(first.labels[0]), int(second.labels[0])
    wrong = can if true_label != can else carton
    predictions[0] = Detections(first.boxes, first.scores, [wrong, *first.labels[1:]])
    moved = second.boxes.copy()
    moved[0] += 1000  # far outside its box: IoU 0
    predictions[1] = Detections(moved, second.scores, second.labels)
    matrix = report.confusion_matrix(targets, predictions, 0.5, len(CLASSES.names))
    assert matrix[true_label, wrong] == 1
    assert matrix[moved_label, 0] == 1 and matrix[0, moved_label] == 1  # missed, and a false detection
    assert matrix.sum() == 12 + 1


def test_assess_counts_per_image_and_ranks_the_worst_images_first(sample_records):
    """What notebook 01's error analysis draws: the per-image counts add up to the whole set's."""
    targets = _targets(sample_records)
    predictions = _as_predictions(targets)
    moved = predictions[2].boxes.copy()
    moved[:] += 1000  # every box of the third image missed, each detection a false alarm
    predictions[2] = Detections(moved, predictions[2].scores, predictions[2].labels)
    dropped = predictions[4]
    predictions[4] = dropped.take(np.arange(len(dropped.labels)) > 0)  # one box of the fifth image missed
    result = report.assess(sample_records, targets, predictions, CLASSES.names, 0.5)
    for key in ("found", "missed", "false"):
        assert sum(row[key] for row in result.per_image) == result.overall[key]
    n2 = len(targets[2]["labels"])
    assert result.per_image[2] == {**result.per_image[2], "found": 0, "missed": n2, "false": n2}
    assert result.worst_images(5) == [2, 4] and result.map < 1.0
    assert result.confusion[0].sum() == n2  # false detections: the background row


def test_detections_below_the_threshold_are_not_counted(sample_records):
    targets = _targets(sample_records)
    predictions = _as_predictions(targets)
    matrix = report.confusion_matrix(targets, predictions, 0.95, len(CLASSES.names))
    assert matrix[1:, 0].sum() == 12 and matrix[0].sum() == 0 and np.trace(matrix) == 0


def test_evaluate_writes_its_outputs_and_they_agree(tiny_model, tmp_path, capsys):
    out = tmp_path / "evaluation"
    assert (
        report.main(["--model", str(tiny_model), "--dataset", "sample", "--threshold", "0.3", "--out", str(out)]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(report.OUTPUTS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_count"] == 6 and summary["boxes"] == 12 and summary["threshold"] == 0.3
    with open(out / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(FRIDGE_CLASSES)
    assert sum(int(r["found"]) for r in rows) == summary["found"]
    assert sum(int(r["boxes"]) for r in rows) == 12
    matrix = np.array(summary["confusion"]["matrix"])
    assert matrix[1:].sum() == 12  # every true box lands in one cell of its row
    predictions = json.loads((out / "predictions.json").read_text())
    truth = json.loads((out / "ground_truth.json").read_text())
    assert {p["image_id"] for p in predictions} <= {i["id"] for i in truth["images"]}
    assert len(truth["annotations"]) == 12
    assert "COCO mAP" in capsys.readouterr().out


def test_labels_the_model_does_not_know_are_one_line(tiny_model, tmp_path, capsys):
    folder = tmp_path / "voc"
    (folder / "annotations").mkdir(parents=True)
    (folder / "images").mkdir()
    (folder / "images" / "10.jpg").write_bytes((SAMPLE_DIR / "images" / "10.jpg").read_bytes())
    xml = (SAMPLE_DIR / "annotations" / "10.xml").read_text()
    (folder / "annotations" / "10.xml").write_text(xml.replace("<name>carton</name>", "<name>pizza</name>"))
    code = report.main(["--model", str(tiny_model), "--dataset", str(folder), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pizza" in err[0]


def test_robustness_and_empty_images_are_measured_and_written(tiny_model, sample_records, tmp_path):
    from helpers.evaluate.robustness import PERTURBATIONS
    from helpers.runtime.model import Detector

    out = tmp_path / "evaluation"
    summary = report.evaluate(Detector(tiny_model), sample_records, 0.3, out, "the sample", robust=True)
    rows = summary["robustness"]["rows"]
    assert [row["perturbation"] for row in rows] == list(PERTURBATIONS)
    clean = rows[0]
    assert (clean["found"], clean["boxes"]) == (summary["found"], summary["boxes"])  # the clean row is the report
    assert summary["robustness"]["empty"]["images"] >= 20
    # Every empty crop comes from a sample photo, all of which are "test" here: counted alone too.
    assert summary["robustness"]["empty"]["test_photo_crops"]["images"] == summary["robustness"]["empty"]["images"]
    text = (out / "robustness.md").read_text()
    assert all(f"| {name} " in text for name in PERTURBATIONS) and "Empty images:" in text
    low, high = summary["intervals"]["recall"]
    assert low <= summary["recall"] <= high


@pytest.mark.slow
def test_the_trained_model_on_its_test_images(trained, served_graph_test_figures, tmp_path):
    """The default set: the quick run's test images, at the model's served threshold, with intervals,
    robustness and empty images; the figures are PyTorch's on the same graph (75 proposals)."""
    from helpers.pipeline import steps

    out = tmp_path / "evaluation"
    assert report.main(["--model", str(steps.ensure_onnx()), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "test images" in summary["images"] and summary["image_count"] == trained.test["images"]
    assert summary["map_50"] == pytest.approx(served_graph_test_figures["map_50"], abs=0.01)
    assert abs(summary["found"] - served_graph_test_figures["found"]) <= 1
    assert summary["robustness"]["empty"]["images"] >= 20
