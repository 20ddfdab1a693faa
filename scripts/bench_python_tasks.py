"""The task the Python worker runs in scripts/bench-compare: `noop`, what `celeritas bench`
submits and Celery's side of the bench runs (scripts/bench_celery.py), returning its arguments.

Run as `python -m celeritas.worker -A bench_python_tasks:app` with scripts/ on the path. Celery's
noop is a plain function in its prefork pool; this one is too, so both pay for a child process
per task the same way.
"""

import celeritas

app = celeritas.Celeritas("bench")


@app.task(name="noop")
def noop(**kwargs):
    return kwargs
