"""Running `summarize` as a user does: a real subprocess."""

import subprocess

TRACEBACK = "Traceback (most recent call last)"


def run(args, env, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["summarize", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def assert_one_line_error(result, *fragments) -> str:
    """Exit status 1, no traceback, one 'summarize: error:' line naming the problem."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert TRACEBACK not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("summarize: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
