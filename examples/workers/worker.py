#!/usr/bin/env python3
"""A task worker for orchestrator, using only Python's standard library.

It long-polls the server for tasks of its queues, runs `handle(payload)` for each one
while a thread sends heartbeats, and completes the task with what `handle` returns, or
fails it with the exception. Replace `handle` with your own code.

    ORCHESTRATOR_URL=http://127.0.0.1:8100 ORCHESTRATOR_TOKEN=... \
        python3 examples/workers/worker.py --queue greetings

A heartbeat answering {"cancel": true} means the run was canceled: the worker stops
caring about the task (handle() is not interrupted; check `task.canceled` in long work).
A 409 means the claim is gone (its lease expired and the task went to another worker).
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

SERVER = os.environ.get("ORCHESTRATOR_URL", "http://127.0.0.1:8100").rstrip("/")
TOKEN = os.environ.get("ORCHESTRATOR_TOKEN", "")


class Conflict(Exception):
    """The claim is not live any more (409): expired, ended or canceled."""


def call(path, body, timeout=60):
    """POSTs JSON to the server and returns the JSON answer."""
    request = urllib.request.Request(
        SERVER + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if TOKEN:
        request.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        if e.code == 409:
            raise Conflict(detail) from None
        raise RuntimeError(f"{path}: HTTP {e.code}: {detail}") from None


def handle(payload):
    """Your code: the step's payload in, the step's output out (anything JSON)."""
    who = (payload or {}).get("who", "world")
    time.sleep(0.2)
    return {"greeting": f"hello, {who}!", "by": socket.gethostname()}


class Task:
    def __init__(self, item):
        self.id = item["id"]
        self.token = item["token"]
        self.payload = item.get("payload")
        self.every = max(item.get("heartbeat_ms", 30000) / 3000.0, 0.1)
        self.canceled = False
        self.lost = False
        self.done = threading.Event()

    def beat(self):
        """Heartbeats until the work is done; notes a cancel or a lost claim."""
        while not self.done.wait(self.every):
            try:
                answer = call(f"/v1/tasks/{self.id}/heartbeat", {"token": self.token})
                if answer.get("cancel"):
                    self.canceled = True
                    return
            except Conflict:
                self.lost = True
                return
            except Exception as e:  # the server is away: the lease may still hold
                print(f"heartbeat of {self.id} failed: {e}", file=sys.stderr)


def work(item):
    task = Task(item)
    beating = threading.Thread(target=task.beat, daemon=True)
    beating.start()
    try:
        output = handle(task.payload)
        end, body = "complete", {"token": task.token, "output": output}
    except Exception as e:
        end, body = "fail", {"token": task.token, "error": f"{type(e).__name__}: {e}"}
    finally:
        task.done.set()
        beating.join()
    if task.canceled or task.lost:
        print(f"{task.id}: dropped ({'canceled' if task.canceled else 'claim lost'})", file=sys.stderr)
        return
    try:
        call(f"/v1/tasks/{task.id}/{end}", body)
        print(f"{task.id}: {end}d", file=sys.stderr)
    except Conflict as e:
        print(f"{task.id}: too late to {end}: {e}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", action="append", required=True, help="a queue to poll (repeatable)")
    parser.add_argument("--name", default=f"{socket.gethostname()}-py-{os.getpid()}")
    parser.add_argument("--once", action="store_true", help="exit after one task")
    args = parser.parse_args()
    delay = 0.1
    print(f"worker {args.name} polling {', '.join(args.queue)} on {SERVER}", file=sys.stderr)
    while True:
        try:
            answer = call(
                "/v1/tasks/poll",
                {"queues": args.queue, "worker": args.name, "max": 1, "wait_ms": 20000},
            )
            delay = 0.1
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            print(f"poll failed: {e}; retrying in {delay:.1f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, 5)
            continue
        for item in answer.get("items", []):
            work(item)
            if args.once:
                return


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
