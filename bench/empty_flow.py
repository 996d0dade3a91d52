"""A flow that does nothing: `./ops bench prefect` times Prefect's own cost of a deployment run with it."""

from prefect import flow


@flow(name="empty", log_prints=False)
def empty() -> None:
    """Nothing: the time from `prefect deployment run` to Completed is the overhead alone."""
