"""The shell commands as a user meets them: inputs checked, short errors, summaries, help."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context

from seedance_pipeline import resolving, seedance
from seedance_pipeline.cli import build_parser, main
from seedance_pipeline.defs.generation.sensors import task_poller
from seedance_pipeline.defs.resources import EvoLinkResource, PipelineResource
from seedance_pipeline.emulator import DEFAULT_API_KEY
from seedance_pipeline.ledger import Ledger
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.settings import SettingError
from seedance_pipeline.tables import LocalTableStore

from .fault_support import free_port, record_beaten, record_unwritable, write_catalog
from .pipeline_support import DAY, SAMPLE, copy_sample_data, emulator_tasks, videos_table

PROMPTS = str(SAMPLE / "catalog" / "prompts.csv")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", PROMPTS, "--partition", "20-11-2026"], "'20-11-2026' is not a date YYYY-MM-DD"),
        (["costs", "--since", "yesterday"], "'yesterday' is not a date YYYY-MM-DD"),
        (["costs", "--until", "2026-02-30"], "'2026-02-30' is not a date YYYY-MM-DD"),
        (["costs", "--by", "model,colour"], "not colour"),
        (["resolve", "20-11-2026", "p1", "--forget"], "'20-11-2026' is not a date"),
        (["run", "2026-11-2"], "'2026-11-2' is not a date YYYY-MM-DD"),
        (["demo", "--time-scale", "-1"], "'-1' is not a number above 0"),
        (["demo", "--time-scale", "0"], "'0' is not a number above 0"),
        (["demo", "--time-scale", "nan"], "'nan' is not a number above 0"),
    ],
)
def test_bad_input_is_refused_in_a_few_lines(capsys, args, message):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert message in err and "Traceback" not in err and len(err.splitlines()) <= 4, err


def test_plan_names_its_prompts_argument_when_it_is_a_folder_or_missing(
    tmp_path, monkeypatch, capsys
):
    """It said `data: no media.csv or media.parquet (set the catalog path)`."""
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(SAMPLE))
    folder, missing = SAMPLE / "catalog", tmp_path / "nope.csv"
    assert main(["plan", str(folder)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {folder} is a folder: give the prompts catalog file in it\n"
    )
    assert main(["plan", str(missing)]) == 2
    assert f"error: {missing}: no such file" in capsys.readouterr().err


def test_plan_warns_of_rows_dated_before_the_first_day_which_no_run_sends(
    tmp_path, monkeypatch, capsys
):
    """A mistyped year (2025 for 2026) was planned like any row and then never run."""
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    write_catalog(tmp_path, 2)
    path = tmp_path / "catalog" / "prompts.csv"
    path.write_text(path.read_text().replace(f"p001,{DAY}", "p001,2025-11-20"))
    assert main(["plan", str(path)]) == 0
    assert capsys.readouterr().err == (
        "warning: 1 row(s) are dated before the first day, 2026-11-01 "
        "(SEEDANCE_PARTITIONS_START), and no run sends them: p001\n"
    )


def test_costs_refuses_a_reversed_range_and_a_chart_into_a_missing_folder(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    assert main(["costs", "--since", "2026-11-22", "--until", "2026-11-20"]) == 2
    assert "--since 2026-11-22 is after --until 2026-11-20" in capsys.readouterr().err
    png = tmp_path / "missing" / "costs.png"
    assert main(["costs", "--png", str(png)]) == 2
    err = capsys.readouterr().err
    assert f"folder {png.parent} does not exist" in err and len(err.splitlines()) == 1
    # `chart.txt` ended in matplotlib's traceback; `chart` was written as chart.png, and the
    # command named `chart`.
    for name in ("chart.txt", "chart"):
        assert main(["costs", "--png", str(tmp_path / name)]) == 2
        said = f"error: --png {tmp_path / name}: give a file name ending in .png\n"
        assert capsys.readouterr().err == said
    assert not list(tmp_path.glob("chart*"))


def test_costs_before_any_day_was_tabled_says_so(tmp_path, monkeypatch, capsys):
    """It ended in a traceback (`'DataFrame' object has no attribute 'error_code'`)."""
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    assert main(["costs"]) == 0
    assert capsys.readouterr().out == (
        f"no generated_videos tables in {tmp_path / 'warehouse'} for these days\n"
    )
    assert main(["costs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"] == []


def test_every_option_of_every_command_is_described():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all(choice.help for choice in commands._choices_actions)
    undescribed = [
        f"{name} {action.option_strings or action.dest}"
        for name, command in commands.choices.items()
        if name != "emulator"  # the emulator's options are described with the emulator
        for action in command._actions
        if not action.help
    ]
    assert undescribed == []
    defaults_unsaid = [
        f"{name} {action.option_strings}"
        for name, command in commands.choices.items()
        for action in command._actions
        if action.option_strings
        and action.default not in (None, False, argparse.SUPPRESS)
        and "default" not in action.help
    ]
    assert defaults_unsaid == []


def test_importing_the_package_reads_no_setting():
    env = {
        "PATH": os.environ["PATH"],
        "EVOLINK_MAX_REQUESTS_PER_SECOND": "abc",
        "SEEDANCE_MAX_CREDITS_PER_PARTITION": "-5",
    }
    code = "import seedance_pipeline.cli, seedance_pipeline.runner, seedance_pipeline.definitions"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_malformed_setting_is_named_when_the_definitions_are_built(monkeypatch):
    from seedance_pipeline.definitions import defs

    monkeypatch.setenv("EVOLINK_MAX_REQUESTS_PER_SECOND", "abc")
    with pytest.raises(SettingError, match="EVOLINK_MAX_REQUESTS_PER_SECOND='abc' is not a number"):
        defs()


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "SEEDANCE_MAX_CREDITS_PER_PARTITION",
            "-5",
            "error: SEEDANCE_MAX_CREDITS_PER_PARTITION='-5' must be a finite number at least 0",
        ),
        (
            "EVOLINK_MAX_REQUESTS_PER_SECOND",
            "abc",
            "error: EVOLINK_MAX_REQUESTS_PER_SECOND='abc' is not a number",
        ),
        # Read deep in a run: the size cap only after the day's tasks were made and paid.
        (
            "SEEDANCE_MAX_VIDEO_BYTES",
            "512MiB",
            "error: SEEDANCE_MAX_VIDEO_BYTES='512MiB' must be a whole number of bytes above 0",
        ),
        (
            "SEEDANCE_CLAIM_LEASE_SECONDS",
            "x",
            "error: SEEDANCE_CLAIM_LEASE_SECONDS='x' is not a number of seconds",
        ),
        (
            "SEEDANCE_LEDGER_URL",
            "mysql://u:secret@db/ledger",
            "error: SEEDANCE_LEDGER_URL must be a postgresql:// URL (or unset for the SQLite "
            "file), not mysql://…",
        ),
        (
            "EVOLINK_API_KEY",
            "sk-evo-local emulator",
            "error: EVOLINK_API_KEY has a space, control or non-ASCII character at position 13; "
            "copy the key again",
        ),
    ],
)
def test_a_malformed_setting_stops_run_in_one_line(
    tmp_path, monkeypatch, capsys, name, value, line
):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(copy_sample_data(tmp_path / "data")))
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    for api in ("EVOLINK_BASE_URL", "EVOLINK_FILES_URL"):  # were it not refused: loopback
        monkeypatch.setenv(api, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(name, value)
    assert main(["run", DAY]) == 2  # as every command's setting errors; 1 is a run that failed
    assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize(
    ("command", "name", "value", "said"),
    [
        (["callbacks"], "SEEDANCE_CLAIM_LEASE_SECONDS", "x", "'x' is not a number of seconds"),
        (["callbacks"], "EVOLINK_API_KEY", "sk-evo-local emulator", "has a space"),
        (["rebuild-ledger", DAY], "SEEDANCE_LEDGER_URL", "mysql://db/l", "postgresql:// URL"),
        (["resolve", DAY, "p1", "--forget"], "SEEDANCE_CLAIM_LEASE_SECONDS", "0", "between 1"),
        # A port that is not a number ended these in a traceback (`costs` opens no ledger, but
        # reads the URL).
        *(
            (command, "SEEDANCE_LEDGER_URL", url, "is not a URL of the form postgresql://user")
            for command, url in (
                (["costs"], "postgresql://u:pw@db:notaport/l"),
                (["callbacks"], "postgresql://u:pw@db:notaport/l"),
                (["callbacks"], "postgresql://u:pw@db/l?port=x"),
                (["resolve", DAY, "p1", "--forget"], "postgresql://u:pw@db/l?port=x"),
            )
        ),
    ],
)
def test_other_commands_name_a_malformed_setting_in_one_line(
    tmp_path, monkeypatch, capsys, command, name, value, said
):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(copy_sample_data(tmp_path / "data")))
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    for api in ("EVOLINK_BASE_URL", "EVOLINK_FILES_URL"):  # were it not refused: loopback
        monkeypatch.setenv(api, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(name, value)
    (tmp_path / "data" / "state").mkdir()
    (tmp_path / "data" / "state" / "ledger.sqlite3").touch()  # resolve looks for it first
    assert main(command) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert ":pw@" not in err


def test_run_with_a_ledger_database_that_does_not_answer_names_the_ledger(
    tmp_path, monkeypatch, capsys, emulator, api_key
):
    """It failed its first step with `connection failed: ... Connection refused`, naming
    neither the ledger nor its setting (Dagster's storage may be a PostgreSQL too)."""
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(copy_sample_data(tmp_path / "data")))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("EVOLINK_API_KEY", api_key)
    for api in ("EVOLINK_BASE_URL", "EVOLINK_FILES_URL"):
        monkeypatch.setenv(api, emulator)
    down = f"postgresql://seedance:pw@127.0.0.1:{free_port()}/ledger"
    monkeypatch.setenv("SEEDANCE_LEDGER_URL", down)
    assert main(["run", DAY]) == 1
    err = capsys.readouterr().err
    port = down.split(":")[3].split("/")[0]
    assert err.startswith("error: cannot reach the ledger, postgresql"), err
    assert f"seedance:***@127.0.0.1:{port}/ledger (" in err and "Connection refused" in err
    assert "check SEEDANCE_LEDGER_URL" in err and ":pw@" not in err
    assert emulator_tasks(emulator) == []


def test_run_that_leaves_paid_videos_unstored_exits_3_saying_when_to_run_again(
    tmp_path, monkeypatch, capsys, start_emulator, api_key
):
    """A CDN answering web pages for a while: `run` exited 0 with the day's videos unstored, and
    a scheduler took the day for done while their links died (helper-45). Nor did the sensor
    try them once due: `run`'s tables run, tagged with the day's ledger state, was that state's
    videos run to the sensor (helper-57)."""
    url = start_emulator(link_fault_rate=1.0, link_faults=("html",))
    write_catalog(tmp_path / "data", 2)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("EVOLINK_API_KEY", api_key)
    for api in ("EVOLINK_BASE_URL", "EVOLINK_FILES_URL"):
        monkeypatch.setenv(api, url)
    assert main(["run", DAY]) == 3
    out, err = capsys.readouterr()
    assert f"{DAY}: 2 rows: 2 download_failed" in out
    assert err.endswith(
        f"\n{DAY}: 2 paid video(s) not stored yet (download_failed): run the day again in 5 "
        "minutes or more, within 24 hours\n"
    ), err
    ledger = Ledger(tmp_path / "data" / "state" / "ledger.sqlite3")
    with ledger.db.transaction() as db:  # 5 minutes later
        db.execute(sql("UPDATE tasks SET next_poll_at = next_poll_at - 300"))
    resources = {
        "evolink": EvoLinkResource(api_key=api_key, base_url=url, files_url=url),
        "pipeline": PipelineResource(data_dir=str(tmp_path / "data")),
    }
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert [r.run_key.split(":")[:2] for r in tick.run_requests] == [["videos", DAY]]
    assert main(["run", DAY]) == 3  # tried again, failing again: the next wait is twice as long
    out, err = capsys.readouterr()
    assert "a run from 10 minutes on tries again while the link lives" in out
    assert "run the day again in 10 minutes or more" in err
    assert {r.download_attempts for r in ledger.rows(DAY)} == {2}


@pytest.mark.parametrize("command", [["callbacks"], ["costs"]])
def test_commands_run_from_another_folder_refuse_to_start(tmp_path, monkeypatch, capsys, command):
    """`callbacks` created a new, empty ledger there, and `costs` said there were no tables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEEDANCE_DATA_DIR", raising=False)
    monkeypatch.delenv("SEEDANCE_LEDGER_URL", raising=False)
    monkeypatch.delenv("SEEDANCE_S3_BUCKET", raising=False)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    assert main(command) == 2
    assert "data/catalog" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["callbacks"], ["costs"], ["resolve", DAY, "p1", "--forget"]])
def test_a_data_directory_that_is_not_there_is_refused_before_a_ledger_is_made(
    tmp_path, monkeypatch, capsys, command
):
    """`SEEDANCE_DATA_DIR=/nonexistent seedance-pipeline callbacks` made a new, empty ledger
    there and answered healthy: every genuine callback was then answered 404."""
    missing = tmp_path / "typo"
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(missing))
    monkeypatch.delenv("SEEDANCE_LEDGER_URL", raising=False)
    monkeypatch.delenv("SEEDANCE_S3_BUCKET", raising=False)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    assert main(command) == 2
    assert f"SEEDANCE_DATA_DIR={missing} is not a folder" in capsys.readouterr().err
    assert not missing.exists()
    assert not (tmp_path / "data").exists()


def test_an_api_that_refuses_connections_is_reported_within_30_seconds(
    tmp_path, monkeypatch, capsys
):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(copy_sample_data(tmp_path / "data")))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name, value in (("EVOLINK_BASE_URL", url), ("EVOLINK_FILES_URL", url)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    started = time.monotonic()
    assert main(["run", DAY]) == 1
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "cannot reach the EvoLink API" in err and "check EVOLINK_BASE_URL" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 4, err


def _shell(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "EVOLINK_"))}
    return env | {
        "SEEDANCE_DATA_DIR": str(tmp_path / "data"),
        "EVOLINK_BASE_URL": url,
        "EVOLINK_FILES_URL": url,
        "EVOLINK_API_KEY": "sk-evo-local-emulator",
        **extra,
    }


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seedance_pipeline.cli", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)


def test_a_failed_step_ends_in_its_reason_and_the_stack_trace_only_with_verbose(tmp_path, emulator):
    copy_sample_data(tmp_path / "data")
    env = _shell(tmp_path, emulator)
    missing = tmp_path / "nope.csv"
    quiet = _cli("run", DAY, "--prompts", str(missing), env=env, cwd=tmp_path)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        f"[{DAY}] planning and submitting",
        f"error: {missing}: no such file",
    ]
    loud = _cli("run", DAY, "--prompts", str(missing), "--verbose", env=env, cwd=tmp_path)
    assert loud.returncode == 1
    # The failed step and its trace: in Dagster's STEP_FAILURE line, or in its RUN_FAILURE line
    # (twice in CI under load the STEP_FAILURE line was missing; the cause is not known).
    assert "prompt_catalog" in loud.stderr and "Stack Trace" in loud.stderr, loud.stderr[:3000]


def test_a_step_failing_on_an_exception_names_its_cause_not_dagsters_wrapper(
    tmp_path, emulator, s3_bucket
):
    """No AWS credentials: boto3's error, wrapped by Dagster, is what the user must see."""
    write_catalog(tmp_path / "data", 2)  # no media to publish: the first table write fails
    env = _shell(tmp_path, emulator, SEEDANCE_S3_BUCKET=s3_bucket, AWS_EC2_METADATA_DISABLED="true")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    failed = _cli("run", DAY, env=env, cwd=tmp_path)
    assert failed.returncode == 1
    reason = failed.stderr.splitlines()[-1]
    assert reason.startswith("error: s3://") and "Unable to locate credentials" in reason, reason
    assert "check SEEDANCE_S3_BUCKET" in reason and "Dagster" not in reason, reason


def test_run_without_dagster_home_records_in_the_working_directory_and_names_unknown_rows(
    tmp_path, start_emulator, monkeypatch, capsys
):
    """Every answer lost: the summary says what each row may have cost and how to settle it."""
    url = start_emulator(drop_rate=1.0)
    copy_sample_data(tmp_path / "data")
    done = _cli("run", DAY, env=_shell(tmp_path, url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # Not "0 task(s) sent": six creates went out, each may have made a task.
    said = f"[{DAY}] 6 request(s) sent: 0 made a task, 6 whose answer was lost (unknown)\n"
    assert said in done.stderr, done.stderr[-2000:]
    assert f"{DAY}: 7 rows: 6 unknown, 1 rejected" in done.stdout
    commands = re.findall(
        r"(\S+) \(up to ([\d.]+) credits\): (seedance-pipeline resolve .+)", done.stdout
    )
    assert len(commands) == 6, done.stdout
    prompt_id, estimate, command = commands[0]
    assert float(estimate) > 0
    assert command == f"seedance-pipeline resolve {DAY} {prompt_id} (--task-id ID | --forget)"

    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_materialized_partitions(AssetKey("generated_videos")) == {DAY}
        assert instance.get_materialized_partitions(AssetKey("prompt_catalog")) == {DAY}

    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path / "data"))
    args = command.replace("(--task-id ID | --forget)", "--forget").split()[1:]
    assert main(args) == 0
    assert (
        capsys.readouterr().out
        == f"{DAY}/{prompt_id}: forgotten; the next run of the day sends it (so does the "
        "task_poller sensor, unless the day's submission was stopped)\n"
    )


def test_a_price_table_of_the_wrong_shape_is_a_setting_to_fix_naming_the_keys(
    tmp_path, monkeypatch, capsys
):
    """`run` exited 1 (as for a pipeline that failed) with Python's own words:
    "PriceTable.__init__() missing 2 required positional arguments"."""
    copy_sample_data(tmp_path / "data")
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"credits_per_second": {"standard": 5}, "currency": "USD"}))
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SEEDANCE_PRICE_TABLE", str(table))
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-local-emulator")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    said = (
        f"error: price table {table} (SEEDANCE_PRICE_TABLE) needs exactly the keys "
        "credits_per_second, money_per_credit (missing: money_per_credit; unknown: currency); "
        "the packaged prices.json shows the shape\n"
    )
    for command in (["run", DAY], ["plan", str(tmp_path / "data" / "catalog" / "prompts.csv")]):
        assert main(command) == 2, command
        assert capsys.readouterr().err == said
    # Inside the right keys: `run` sent and stored six videos, then failed writing its tables
    # ("'float' object is not iterable"); `plan` ended in a traceback.
    packaged = json.loads((Path(seedance.__file__).parent / "prices.json").read_text())
    wrong = {
        "money_per_credit = 0.0147; it must be an object": {"money_per_credit": 0.0147},
        "credits_per_second.standard = 6.251; it must be an object": {
            "credits_per_second": packaged["credits_per_second"] | {"standard": 6.251}
        },
        'credits_per_second.fast.without_reference_video.480p = "5"; it must be a number above 0 '
        "and at most 1,000,000": {
            "credits_per_second": packaged["credits_per_second"]
            | {"fast": {"without_reference_video": {"480p": "5"}}}
        },
        # `plan` ended in decimal.InvalidOperation: a task's credits past 28 digits.
        "credits_per_second.fast.without_reference_video.480p = 1e+25; it must be a number above "
        "0 and at most 1,000,000": {
            "credits_per_second": packaged["credits_per_second"]
            | {"fast": {"without_reference_video": {"480p": 1e25}}}
        },
        # Priced nothing: every request's estimate unknown, a budget refusing the day.
        "credits_per_second.Standard; the keys there are fast, mini, standard": {
            "credits_per_second": {"Standard": packaged["credits_per_second"]["standard"]}
        },
        "credits_per_second.fast.without_reference_video.720P; the keys there are 480p, 720p, "
        "1080p": {"credits_per_second": {"fast": {"without_reference_video": {"720P": 10.935}}}},
    }
    for problem, change in wrong.items():
        table.write_text(json.dumps(packaged | change))
        assert main(["run", DAY]) == 2
        assert f"(SEEDANCE_PRICE_TABLE) has {problem}; the packaged" in capsys.readouterr().err


def test_run_against_a_host_that_is_not_the_api_stops_in_one_line(tmp_path):
    """A captive portal answering 200 with a web page: `run` ended in a traceback."""
    import http.server
    import threading

    class Portal(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = b"<html>Sign in to the hotel wifi</html>"
            moved = self.server.moved  # type: ignore[attr-defined]
            self.send_response(301 if moved else 200)
            if moved:
                self.send_header("Location", "https://api.evolink.ai/v1/credits")
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args) -> None:
            pass

    portal = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{portal.server_address[1]}"
    copy_sample_data(tmp_path / "data")
    said = {
        # A redirect (an old address, http to https): every create it answered was `unknown`.
        True: "error: EVOLINK_BASE_URL answered 301, a redirect: set it to the address the API "
        "answers at",
        False: f"error: EVOLINK_BASE_URL does not answer as the EvoLink API does (GET {url}"
        "/v1/credits answered 200 but the answer is not JSON): check it",
    }
    try:
        for moved, error in said.items():
            portal.moved = moved  # type: ignore[attr-defined]
            done = _cli("run", DAY, env=_shell(tmp_path, url), cwd=tmp_path)
            assert done.returncode == 1, done.stderr[-2000:]
            assert done.stderr.splitlines()[-1] == error
            assert "Traceback" not in done.stderr
    finally:
        portal.shutdown()


def test_resolve_asks_the_api_about_a_task_before_attaching_it(
    tmp_path, start_emulator, monkeypatch, capsys
):
    """An attached task cannot be taken back. A mistyped id was attached without a word and
    polled into `failed` (the paid video never stored), an id the API refuses kept `run`
    waiting for ever, and another prompt's task was stored as this prompt's video."""
    from seedance_pipeline.ledger import Ledger
    from seedance_pipeline.ledger.database import sql

    monkeypatch.setattr(resolving, "NOT_FOUND_PAUSE_SECONDS", 0)
    url = start_emulator(drop_rate=1.0)
    copy_sample_data(tmp_path / "data")
    env = _shell(tmp_path, url)
    assert _cli("run", DAY, env=env, cwd=tmp_path).returncode == 0
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ledger = Ledger(tmp_path / "data" / "state" / "ledger.sqlite3")
    unknown = [r for r in ledger.rows(DAY) if r.status == "unknown"]
    made = {t["prompt"]: t["id"] for t in emulator_tasks(url)}

    def differ(a, b) -> bool:
        return any(a.request.get(k) != b.request.get(k) for k in ("model", "duration"))

    mine, other = next((a, b) for a in unknown for b in unknown if differ(a, b))
    task_id = made[mine.request["prompt"]]
    mistyped = task_id[: task_id.rindex("-") + 1] + "zzzzzzzz"
    refusals = {
        "TASK/bad": "'TASK/bad' is not a task id",
        "TASK-bad": "the API says 'TASK-bad' is not a task id",
        mistyped: f"the API answered 404 for task {mistyped} 4 times",
        made[other.request["prompt"]]: "it is not the task of",
    }
    for wrong, said in refusals.items():
        assert main(["resolve", DAY, mine.prompt_id, "--task-id", wrong]) == 2
        err = capsys.readouterr().err
        assert said in err and "nothing was changed" in err, err
        row = next(r for r in ledger.rows(DAY) if r.prompt_id == mine.prompt_id)
        assert (row.status, row.task_id) == ("unknown", None)

    # A task made before the row was claimed answers another request (the vendor's clock may
    # lag this host's by 10 minutes): as if the row were claimed an hour after its task.
    claimed = {"id": mine.prompt_id, "t": mine.claimed_at}
    with ledger.db.transaction() as db:
        db.execute(sql("UPDATE tasks SET claimed_at = :t + 3600 WHERE prompt_id = :id"), claimed)
    assert main(["resolve", DAY, mine.prompt_id, "--task-id", task_id]) == 2
    assert "was made before the row's request was sent" in capsys.readouterr().err
    with ledger.db.transaction() as db:
        db.execute(sql("UPDATE tasks SET claimed_at = :t WHERE prompt_id = :id"), claimed)

    assert main(["resolve", DAY, mine.prompt_id, "--task-id", task_id]) == 0
    assert (
        capsys.readouterr().out
        == f"{DAY}/{mine.prompt_id}: attached to {task_id}; the sensor polls it\n"
    )
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == mine.prompt_id)
    assert (row.status, row.task_id) == ("pending", task_id)

    # A claim a crashed run left (another host's, its lease run out) is checked too: it was
    # still `submitting` when the check looked, and the mistyped id went on unchecked.
    assert ledger.claim(DAY, "crashed", mine.request, 1.0)
    with ledger.db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET owner = :o, lease_expires_at = 1 WHERE prompt_id = 'crashed'"),
            {"o": "worker-b/ffffffff-0000-0000-0000-000000000000.1/4242/abcdef01"},
        )
    assert main(["resolve", DAY, "crashed", "--task-id", mistyped]) == 2
    assert f"the API answered 404 for task {mistyped} 4 times" in capsys.readouterr().err
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "crashed")
    assert (row.status, row.task_id) == ("unknown", None)


def test_resolve_asks_again_before_believing_a_404(tmp_path, start_emulator, monkeypatch, capsys):
    """A task whose first queries answer 404 (a gateway, a replica not yet told): `resolve`
    believed the first, said the task was forgotten, and a user who then `--forget`s the
    prompt pays for it twice (helper-42's chaos runs)."""
    from seedance_pipeline.ledger import Ledger

    monkeypatch.setattr(resolving, "NOT_FOUND_PAUSE_SECONDS", 0)
    url = start_emulator(poll_fault_rate=1.0, poll_faults=("transient_404",), poll_fault_polls=3)
    copy_sample_data(tmp_path / "data")
    for name, value in _shell(tmp_path, url).items():
        monkeypatch.setenv(name, value)
    ledger = Ledger(tmp_path / "data" / "state" / "ledger.sqlite3")
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}
    assert ledger.claim(DAY, "lost", body, 1.0)
    ledger.record_outcome_unknown(DAY, "lost", "the create's answer was lost")
    with seedance.Client(DEFAULT_API_KEY, base_url=url) as client:
        task = {"id": client.create_task(body).id}
    assert main(["resolve", DAY, "lost", "--task-id", task["id"]]) == 0, capsys.readouterr()
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "lost")
    assert row.task_id == task["id"]


WAVES = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}


def _a_shells_ledger(tmp_path, emulator, monkeypatch) -> tuple[Ledger, LocalTableStore]:
    """The ledger and tables a shell's commands use (on the sample data)."""
    copy_sample_data(tmp_path / "data")
    for name, value in _shell(tmp_path, emulator).items():
        monkeypatch.setenv(name, value)
    return Ledger(tmp_path / "data" / "state" / "ledger.sqlite3"), LocalTableStore(
        tmp_path / "data"
    )


@pytest.mark.parametrize("record_write", [record_beaten, record_unwritable])
def test_resolve_forget_whose_record_cannot_be_written_says_how_to_put_it_right(
    tmp_path, emulator, monkeypatch, capsys, record_write
):
    """The prompt was forgotten in the ledger, then the day's record was not written (other
    workers writing it, S3 away, a local disk refusing): a traceback, and every later run of
    the day refused, the record listing a prompt the ledger no longer had (helper-80, -81)."""
    from seedance_pipeline.records import LedgerLost, check_ledger, write_record

    ledger, tables = _a_shells_ledger(tmp_path, emulator, monkeypatch)
    assert ledger.claim(DAY, "lost", WAVES, 1.0)
    ledger.record_outcome_unknown(DAY, "lost", "the create's answer was lost")
    write_record(ledger, tables, DAY)
    with monkeypatch.context() as failing:
        failing.setattr(LocalTableStore, "write_if", record_write)
        assert main(["resolve", DAY, "lost", "--forget"]) == 1
    said = capsys.readouterr().err
    assert f"{DAY}/lost is settled in the ledger, but the day's record" in said
    assert f"run `seedance-pipeline rebuild-ledger {DAY}`, then this resolve again" in said
    with pytest.raises(LedgerLost):  # as said
        check_ledger(ledger, tables, DAY)
    assert main(["rebuild-ledger", DAY]) == 0
    assert main(["resolve", DAY, "lost", "--forget"]) == 0
    check_ledger(ledger, tables, DAY)
    assert [r.prompt_id for r in ledger.rows(DAY)] == []


def test_resolve_forget_of_a_claim_the_record_never_listed_gives_no_advice_to_rebuild(
    tmp_path, emulator, monkeypatch, capsys
):
    """A run killed outright left a claim its record never listed. Its record not written
    after `--forget`, resolve said the day's runs refuse (they do not) and to rebuild the
    ledger and resolve again, which then failed: no such row (helper-81)."""
    from seedance_pipeline.records import check_ledger, write_record

    ledger, tables = _a_shells_ledger(tmp_path, emulator, monkeypatch)
    assert ledger.claim(DAY, "sent", WAVES, 1.0)
    ledger.record_submitted(DAY, "sent", "task-1", time.time() + 60, credits_reserved=1.0)
    write_record(ledger, tables, DAY)  # then the killed run's claim
    assert ledger.claim(DAY, "lost", {**WAVES, "prompt": "lost"}, 1.0)
    ledger.record_outcome_unknown(DAY, "lost", "the run was killed")
    with monkeypatch.context() as beaten:
        beaten.setattr(LocalTableStore, "write_if", record_beaten)
        assert main(["resolve", DAY, "lost", "--forget"]) == 1
    said = capsys.readouterr().err
    assert "rebuild-ledger" not in said and "the day's next step writes it" in said
    check_ledger(ledger, tables, DAY)  # as said: the day's runs go on


def test_after_a_run_the_sensor_asks_for_no_run_of_the_finished_day(tmp_path, emulator):
    """`dagster dev` after `demo` or `run` on the same Dagster home: the sensor found no
    videos run tagged with the day's ledger state and ran generated_videos again for each day."""
    copy_sample_data(tmp_path / "data")
    done = _cli("run", DAY, env=_shell(tmp_path, emulator), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    resources = {
        "evolink": EvoLinkResource(
            api_key="sk-evo-local-emulator", base_url=emulator, files_url=emulator
        ),
        "pipeline": PipelineResource(data_dir=str(tmp_path / "data")),
    }
    assert DAY in resources["pipeline"].ledger().partitions_settled()  # a day it would ask for
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert tick.run_requests == []


def test_runs_opening_a_new_dagster_home_at_once_all_start_and_leave_it_whole(tmp_path):
    """Without the open lock, most rounds of this broke: one stamp wins, the others fail."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    opening = "from seedance_pipeline.runner import instance; print(instance().get_runs_count())"
    opens = [
        subprocess.Popen(
            [sys.executable, "-c", opening], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    assert [p.communicate(timeout=120)[0] for p in opens] == ["0\n"] * 4
    later = subprocess.run([sys.executable, "-c", opening], env=env, capture_output=True, text=True)
    assert later.stdout == "0\n", later.stderr[-2000:]


def _videos(day: str, rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return videos_table(
        [
            {
                "prompt_id": f"p{i}",
                "scheduled_date": day,
                "task_id": f"task-{day}-{i}" if status != "rejected" else None,
                "model": model,
                "quality": "720p",
                "campaign": campaign,
                "status": status,
                "duration_s": 5.0 if status == "completed" else None,
                "credits_estimated": credits,
                "credits_reserved": credits,
                "credits_charged": credits if status == "completed" else 0.0,
                "attempts": 1,
            }
            for i, (model, campaign, status, credits) in enumerate(rows)
        ]
    )


def test_costs_counts_are_integers_money_is_shown_and_the_chart_follows_by(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    LocalTableStore(tmp_path).write(
        _videos("2026-11-20", [("m-a", "spring", "completed", 10.0), ("m-b", None, "failed", 4.0)]),
        "generated_videos",
        "2026-11-20",
    )
    LocalTableStore(tmp_path).write(
        _videos("2026-11-21", [("m-a", "fall", "completed", 20.0), ("m-b", None, "rejected", 0)]),
        "generated_videos",
        "2026-11-21",
    )
    charts = {}
    for by in ("campaign", "model"):
        charts[by] = tmp_path / f"{by}.png"
        # a group named twice is grouped by once (it was a traceback)
        assert main(["costs", "--by", f"{by},{by}", "--json", "--png", str(charts[by])]) == 0
        out, err = capsys.readouterr()
        report = json.loads(out)
        assert err == f"chart: {charts[by]}\n"
        assert charts[by].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["total"]["tasks"] == 4 and isinstance(report["total"]["tasks"], int)
    assert [(g["model"], g["completed"], g["failed"]) for g in report["groups"]] == [
        ("m-a", 2, 0),
        ("m-b", 0, 1),
    ]
    assert report["total"]["cost_cny"] == pytest.approx(3.0)
    assert charts["campaign"].read_bytes() != charts["model"].read_bytes()

    assert main(["costs", "--by", "day"]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header[0] == "scheduled_date" and header[-2:] == ["cost_cny", "cost_usd"]
    assert "TOTAL: tasks=4, completed=2, failed=1, cancelled=0, rejected=1, unknown=0" in table


def test_plan_read_by_a_pager_that_stops_early_ends_quietly(tmp_path):
    """`plan --json | head` ended in a BrokenPipeError traceback."""
    write_catalog(tmp_path / "data", 500)  # more output than a pipe holds
    command = [sys.executable, "-m", "seedance_pipeline.cli", "plan", "--json"]
    plan = subprocess.Popen(
        [*command, str(tmp_path / "data" / "catalog" / "prompts.csv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"SEEDANCE_DATA_DIR": str(tmp_path / "data")},
    )
    assert plan.stdout.readline() == b"{\n"
    plan.stdout.close()  # as head does after its lines
    assert plan.wait(timeout=120) == 141
    assert plan.stderr.read() == b""


def test_runs_summary_says_why_each_row_was_not_delivered(capsys):
    """The shell user had counts only ("1 rejected") and had to open the table for reasons."""
    from seedance_pipeline.reports import REASONS_SHOWN, print_run_summary

    rows = [
        ("ok", "completed", None, None),
        ("tiny", "rejected", "rejected_before_submission", "image_urls[0]: is 200x200 px"),
        ("nsfw", "failed", "content_policy_violation", "The prompt was flagged"),
        ("late", "expired", "link_expired", None),
        ("lost", "unknown", None, None),  # has its own advice: resolve
        ("dup", "rejected", "sent_on_other_day", "already sent on 2026-11-19"),
    ] + [(f"f{i:02d}", "failed", "internal_error", "vendor error") for i in range(REASONS_SHOWN)]
    columns = ["prompt_id", "status", "error_code", "error_message"]
    videos = videos_table([dict(zip(columns, row, strict=True)) for row in rows])
    videos["credits_estimated"] = videos["credits_reserved"] = videos["credits_charged"] = 1.0
    print_run_summary(DAY, videos)
    said = capsys.readouterr().out.splitlines()
    start = said.index(f"{DAY}: not delivered:")
    assert said[start + 1 : start + 4] == [
        "  tiny (rejected): image_urls[0]: is 200x200 px",
        "  nsfw (failed): The prompt was flagged",
        "  late (expired): link_expired",
    ]
    assert said[start + REASONS_SHOWN + 1] == (
        f"  … and 3 more; the generated_videos table of {DAY} gives every row's reason"
    )
    assert not any(line.startswith(("  ok (", "  lost (unknown)", "  dup (")) for line in said)


def test_a_local_file_error_ends_run_in_one_line_naming_the_path(tmp_path, emulator):
    """DAGSTER_HOME a file (or a full, read-only disk): a raw OSError traceback."""
    copy_sample_data(tmp_path / "data")
    home = tmp_path / "dagster_home"
    home.write_text("not a folder")
    failed = _cli("run", DAY, env=_shell(tmp_path, emulator, DAGSTER_HOME=str(home)), cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == f"error: File exists: {home}", failed.stderr[-2000:]


def test_a_ledger_that_cannot_be_opened_ends_a_command_in_one_line_naming_it(
    tmp_path, monkeypatch, capsys
):
    """A read-only or full disk under the ledger, or a folder where its file belongs: SQLAlchemy's
    traceback, with the SQL, and no word of which database."""
    copy_sample_data(tmp_path / "data")
    ledger = tmp_path / "data" / "state" / "ledger.sqlite3"
    ledger.mkdir(parents=True)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SEEDANCE_LEDGER_URL", raising=False)
    assert main(["rebuild-ledger", DAY]) == 1
    err = capsys.readouterr().err
    assert err == f"error: unable to open database file (the ledger, sqlite:///{ledger})\n"


def test_run_says_what_it_sent_and_what_the_ledger_already_held(tmp_path, emulator):
    """The day's progress counts every task in the ledger: a second run read like the first."""
    copy_sample_data(tmp_path / "data")
    env = _shell(tmp_path, emulator)
    first, again = (_cli("run", DAY, env=env, cwd=tmp_path) for _ in range(2))
    assert first.returncode == again.returncode == 0, first.stderr[-2000:] + again.stderr[-2000:]
    assert f"[{DAY}] 6 task(s) sent\n" in first.stderr, first.stderr[-2000:]
    sent_again = f"[{DAY}] 0 task(s) sent; 6 already in the ledger, not sent again\n"
    assert sent_again in again.stderr, again.stderr[-2000:]


def test_runs_resubmission_rounds_say_what_they_resent(tmp_path, start_emulator):
    url = start_emulator(task_failure_rate=0.6, seed=11)
    copy_sample_data(tmp_path / "data")
    done = _cli("run", DAY, env=_shell(tmp_path, url, SEEDANCE_MAX_RESUBMISSIONS="2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    sent = re.findall(
        r"\] (\d+) task\(s\) sent(?: \((\d+) of them resubmissions\))?(?:; (\d+))?", done.stderr
    )
    assert sent[0] == ("6", "", ""), done.stderr[-2000:]
    rounds = [(int(n), int(again or 0), int(kept or 0)) for n, again, kept in sent[1:]]
    assert rounds, "the seeded emulator should fail some tasks transiently"
    assert all(n == again and n + kept == 6 for n, again, kept in rounds), rounds
    assert 6 + sum(n for n, _, _ in rounds) == len(emulator_tasks(url))


def test_a_run_interrupted_outside_its_step_s_handler_says_what_to_do():
    """SIGTERM while Dagster waited to retry the submission step: `run` printed only
    `error: dagster._core.errors.DagsterExecutionInterruptedError` (helper-49)."""
    from dagster import DagsterExecutionInterruptedError, DailyPartitionsDefinition, asset
    from dagster import materialize as run_assets

    from seedance_pipeline.runner import _failure

    @asset(partitions_def=DailyPartitionsDefinition(start_date="2026-11-01"))
    def waiting_to_retry() -> None:
        raise DagsterExecutionInterruptedError()

    result = run_assets([waiting_to_retry], partition_key=DAY, raise_on_error=False)
    assert _failure(result) == (
        "the run was interrupted; what was sent is in the ledger; run the day again to send the "
        f"rest: `seedance-pipeline run {DAY}`, or materialise generation_requests and "
        f"submitted_tasks for {DAY} in Dagster"
    )
