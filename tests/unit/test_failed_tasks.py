"""When the CD test's sandbox cannot be made, the error says which task failed and
why (tests/cd/sandbox.py, through harness/playbook.py's failed_tasks), not only
where the log lies: CI keeps no files."""

from __future__ import annotations

from harness.playbook import failed_tasks

OUTPUT = """\
PLAY [Check SSH access as production will have it] *****
TASK [Gathering Facts] *********************************
ok: [cdtest-sandbox]
TASK [Wait until the sandbox answers over SSH] *********
fatal: [cdtest-sandbox]: FAILED! => changed=false
  elapsed: 60
  msg: timed out waiting for ping module test
PLAY RECAP *********************************************
"""


def test_the_failed_task_and_its_message_are_named() -> None:
    why = failed_tasks(OUTPUT).splitlines()
    assert why[0] == "TASK [Wait until the sandbox answers over SSH] *********"
    assert why[1].startswith("fatal: [cdtest-sandbox]: FAILED!")
    assert "timed out waiting for ping module test" in why[3]
    assert "Gathering Facts" not in "\n".join(why)


def test_without_a_marked_failure_the_last_lines_are_given() -> None:
    output = "\n".join(f"line {i}" for i in range(100)) + "\nERROR: something else\n"
    assert failed_tasks(output, most=3).splitlines() == [
        "line 98",
        "line 99",
        "ERROR: something else",
    ]
