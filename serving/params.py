"""The query parameters endpoints share, validated by FastAPI (422 names the parameter and the problem)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import HTTPException, Query

MAX_LIMIT = 1000


def limit_query(default: int) -> object:
    return Query(default, ge=1, le=MAX_LIMIT, description=f"rows to return, 1..{MAX_LIMIT}")


StartDate = Annotated[dt.date | None, Query(description="first day (ISO 8601 date, e.g. 2014-04-01), included")]
EndDate = Annotated[dt.date | None, Query(description="last day (ISO 8601 date), included")]


def date_bounds(start_date: dt.date | None, end_date: dt.date | None) -> dict[str, dt.date]:
    """Query parameters for `{start:Date}` and `{end:Date}`: the whole calendar where not given."""
    if start_date and end_date and start_date > end_date:
        # a 422 like FastAPI's own, naming both parameters
        raise HTTPException(
            status_code=422,
            detail=[
                {
                    "type": "date_range",
                    "loc": ["query", "start_date"],
                    "msg": f"start_date {start_date} is after end_date {end_date}",
                    "input": str(start_date),
                }
            ],
        )
    return {"start": start_date or dt.date(1970, 1, 1), "end": end_date or dt.date(2149, 6, 6)}
