"""Two functions under one task name: the worker must refuse to start."""

from celeritas import Celeritas

app = Celeritas("duplicates")


@app.task(name="same.name")
def first() -> int:
    return 1


@app.task(name="same.name")
def second() -> int:
    return 2
