"""A small real REST service for the `openapi` upstream tests, described by rest_service.yaml next to it.

Run: python rest_service.py --port N   (launch.run_http_upstream starts it and waits until it listens)

Endpoints (all JSON unless said):
- GET  /openapi.yaml          its own OpenAPI document (servers[0] is relative: "/")
- GET  /spec-requests         the headers each request for the document came with (the last 20)
- GET  /pets?limit=&tag=...   the pets, at most `limit`, filtered by any of the `tag`s
- GET  /pets/{pet_id}         one pet (404 with a JSON error when unknown); `verbose=true` adds the query seen
- POST /pets                  creates a pet from the JSON body, answers 201 with it
- DELETE /pets/{pet_id}       204, or 404
- GET  /whoami                the request's headers, as received (what reaches the REST API)
- GET  /private               401 (echoing the Authorization it got) unless `Authorization: Bearer good-token`
- GET  /echo/{value}          the raw path and the decoded value (path escaping)
- GET  /text                  text/plain
- GET  /big                   a body of `size` bytes
- GET  /hang                  never answers (until the client goes away)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

SPEC = Path(__file__).with_name("rest_service.yaml")

PETS: dict[int, dict[str, object]] = {
    1: {"id": 1, "name": "Rex", "tag": "dog"},
    2: {"id": 2, "name": "Tom", "tag": "cat"},
    3: {"id": 3, "name": "Nemo", "tag": "fish"},
}


# The headers of every request for the document, in order (GET /spec-requests shows them).
SPEC_REQUESTS: list[dict[str, str]] = []


async def spec(request: Request) -> Response:
    SPEC_REQUESTS.append({k.lower(): v for k, v in request.headers.items()})
    del SPEC_REQUESTS[:-20]
    return Response(SPEC.read_bytes(), media_type="application/yaml")


async def spec_requests(request: Request) -> Response:
    return JSONResponse(SPEC_REQUESTS)


async def list_pets(request: Request) -> Response:
    tags = request.query_params.getlist("tag")
    limit = int(request.query_params.get("limit", "100"))
    pets = [p for p in PETS.values() if not tags or p["tag"] in tags][:limit]
    return JSONResponse({"pets": pets, "count": len(pets)})


async def get_pet(request: Request) -> Response:
    pet = PETS.get(int(request.path_params["pet_id"]))
    if pet is None:
        return JSONResponse({"error": "no such pet"}, status_code=404)
    if request.query_params.get("verbose") == "true":
        return JSONResponse({**pet, "query": dict(request.query_params)})
    return JSONResponse(pet)


async def create_pet(request: Request) -> Response:
    if request.headers.get("content-type") != "application/json":
        return JSONResponse({"error": "send JSON"}, status_code=415)
    body = await request.json()
    pet_id = max(PETS) + 1
    PETS[pet_id] = {"id": pet_id, **body}
    return JSONResponse(PETS[pet_id], status_code=201)


async def delete_pet(request: Request) -> Response:
    if PETS.pop(int(request.path_params["pet_id"]), None) is None:
        return JSONResponse({"error": "no such pet"}, status_code=404)
    return Response(status_code=204)


async def whoami(request: Request) -> Response:
    return JSONResponse({"headers": {k.lower(): v for k, v in request.headers.items()}})


async def private(request: Request) -> Response:
    if request.headers.get("authorization") != "Bearer good-token":
        return JSONResponse({"error": "unauthorized", "got": request.headers.get("authorization")}, status_code=401)
    return JSONResponse({"secret": "granted"})


async def echo(request: Request) -> Response:
    return JSONResponse({"raw_path": request.scope["raw_path"].decode(), "value": request.path_params["value"]})


async def text(request: Request) -> Response:
    return PlainTextResponse("plain words")


async def big(request: Request) -> Response:
    return PlainTextResponse("x" * int(request.query_params.get("size", "0")))


async def hang(request: Request) -> Response:
    while (await request.receive())["type"] != "http.disconnect":  # no answer until the client goes away
        pass
    return Response()


app = Starlette(
    routes=[
        Route("/openapi.yaml", spec),
        Route("/spec-requests", spec_requests),
        Route("/pets", list_pets, methods=["GET"]),
        Route("/pets", create_pet, methods=["POST"]),
        Route("/pets/{pet_id:int}", get_pet, methods=["GET"]),
        Route("/pets/{pet_id:int}", delete_pet, methods=["DELETE"]),
        Route("/whoami", whoami),
        Route("/private", private),
        Route("/echo/{value:path}", echo),
        Route("/text", text),
        Route("/big", big),
        Route("/hang", hang),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", default="http")  # accepted for launch.run_http_upstream; always HTTP
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
