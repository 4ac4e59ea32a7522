"""The reference: the smallest FastAPI app, served by the same uvicorn, for ratio figures."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
