"""SnapStart: the template publishes a version behind an alias only when asked, and the handler's
snapshot hooks warm the model before the snapshot and refresh per-environment state after restore."""

import base64
import json
import random

import snapshot_restore_py
from cfnlint.decode import cfn_yaml

from helpers.aws import deploy
from helpers.local import moto_aws
from helpers.runtime import handler as h
from helpers.runtime import storage


def test_snapstart_and_provisioned_concurrency_are_off_by_default_and_exclusive():
    template = cfn_yaml.load(str(deploy.TEMPLATE))
    assert template["Parameters"]["SnapStart"]["Default"] == "no"
    assert template["Parameters"]["ProvisionedConcurrency"]["Default"] == 0
    function = template["Resources"]["Function"]["Properties"]
    assert function["SnapStart"] == {
        "Fn::If": ["SnapStartOn", {"ApplyOn": "PublishedVersions"}, {"Ref": "AWS::NoValue"}]
    }
    off = moto_aws.resources_off_by_condition(deploy.TEMPLATE, {})
    assert {"Version", "LiveAlias"} <= set(off)
    assert not {"Version", "LiveAlias"} & set(
        moto_aws.resources_off_by_condition(deploy.TEMPLATE, {"SnapStart": "yes"})
    )
    assert not {"Version", "LiveAlias"} & set(
        moto_aws.resources_off_by_condition(deploy.TEMPLATE, {"ProvisionedConcurrency": "2"})
    )
    rule = template["Rules"]["SnapStartWithoutProvisionedConcurrency"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "yes"]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "ProvisionedConcurrency"}, "0"]}


def test_the_function_url_and_its_public_permissions_follow_the_alias_when_a_version_is_published():
    resources = cfn_yaml.load(str(deploy.TEMPLATE))["Resources"]
    # The alias name comes from the alias's ARN (so the URL waits for the alias); $LATEST otherwise.
    assert resources["FunctionUrl"]["Properties"]["Qualifier"] == {
        "Fn::If": [
            "PublishVersion",
            {"Fn::Select": [7, {"Fn::Split": [":", {"Ref": "LiveAlias"}]}]},
            {"Ref": "AWS::NoValue"},
        ]
    }
    assert resources["LiveAlias"]["Properties"]["Name"] == "live"
    for permission in ("PublicUrlInvokePermission", "PublicUrlFunctionPermission"):
        assert resources[permission]["Properties"]["FunctionName"] == {
            "Fn::If": ["PublishVersion", {"Ref": "LiveAlias"}, {"Ref": "Function"}]
        }


def test_hooks_run_in_order_warm_the_model_refresh_state_and_the_function_answers(
    tiny_model, sample_jpegs, lambda_context, tmp_path, monkeypatch, capsys
):
    before = [entry[0] for entry in snapshot_restore_py.get_before_snapshot()]
    after = [entry[0] for entry in snapshot_restore_py.get_after_restore()]
    assert h.before_snapshot in before and h.after_restore in after  # registered at import, as Lambda needs
    state = h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING", "MODEL_CACHE_DIR": str(tmp_path)})
    calls = []
    predict = state.detector.predict
    monkeypatch.setattr(
        state.detector,
        "predict",
        lambda *args: calls.append(getattr(args[0], "pixels", args[0]).shape) or predict(*args),
    )

    for func, args, kwargs in snapshot_restore_py.get_before_snapshot():  # what the runtime does, in its order
        func(*args, **kwargs)
    assert calls == [(state.detector.config.image_size, state.detector.config.image_size, 3)]  # one warm-up inference

    (tmp_path / "model.part").write_bytes(b"an interrupted download")
    snapshot_random, snapshot_client = random.getstate(), storage.client()
    assert storage.client() is snapshot_client  # one client per execution environment...
    for func, args, kwargs in snapshot_restore_py.get_after_restore():
        func(*args, **kwargs)
    assert random.getstate() != snapshot_random and not (tmp_path / "model.part").exists()
    assert storage.client() is not snapshot_client  # ...and each restored environment makes its own

    capsys.readouterr()
    out = h.handler({"image": base64.b64encode(sample_jpegs["10.jpg"]).decode()}, lambda_context)
    assert out["image"] == {"width": 499, "height": 666} and "detections" in out
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics[0]["ColdStart"] == 1 and "InitMs" not in metrics[0]  # the restored environment's first request
