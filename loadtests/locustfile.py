"""Locust load test: learners sign up, hold a WebSocket, ask the tutor and submit exercises.

`make loadtest` starts a private stack and runs this headless; or
`locust -f loadtests/locustfile.py --host http://127.0.0.1:8000` against a running one.
Besides the HTTP stats, each task reports two WS events: submit → first envelope, submit → result.
"""

import time
import uuid

from locust import HttpUser, between, events, task

from loadtests.scenarios.live_socket import LiveSocket

# A passing answer for one shipped exercise, so submissions do the full grading work.
SUBMISSION = {
    "exercise_id": "html-first-page",
    "code": {"html": "<h1>My First Page</h1><p>Hello, web!</p>", "css": "", "js": ""},
}


class Learner(HttpUser):
    """One learner: signs up once, keeps a socket open, mostly chats, sometimes submits."""

    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        credentials = {"username": f"load{uuid.uuid4().hex[:12]}", "password": "load-test-password"}
        response = self.client.post("/api/auth/register", json=credentials, name="/api/auth/register")
        response.raise_for_status()
        body = response.json()
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}
        ws_url = self.host.replace("http", "ws", 1) + f"/ws/user/{body['participant_id']}"
        self.socket = LiveSocket(ws_url, body["access_token"], events.request.fire)

    def on_stop(self) -> None:
        self.socket.close()

    def _submit(self, path: str, kind: str, payload: dict[str, object]) -> None:
        started = time.perf_counter()
        with self.client.post(path, json=payload, headers=self.headers, catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"expected 202, got {response.status_code}")
                return
            self.socket.expect(response.json()["task_id"], kind, started)

    @task(3)
    def ask_the_tutor(self) -> None:
        self._submit("/ai/chat2", "chat", {"message": "How do I centre a div?"})

    @task(1)
    def submit_an_exercise(self) -> None:
        self._submit("/submit-test2", "submission", SUBMISSION)
