// Sign in or register, then go where the learner was heading.

import { api, saveSession } from "../api.js";

const form = document.getElementById("auth-form");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const action = event.submitter?.dataset.action ?? "login";
  const data = new FormData(form);
  try {
    const session = await api(`/api/auth/${action}`, {
      method: "POST",
      body: { username: data.get("username"), password: data.get("password") },
    });
    saveSession(session);
    const next = new URLSearchParams(location.search).get("next");
    location.replace(next?.startsWith("/") && !next.startsWith("//") ? next : "/dashboard.html");
  } catch (error) {
    document.getElementById("auth-error").textContent = error.message;
  }
});
