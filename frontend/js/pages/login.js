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
    location.replace(sameOriginUrl(new URLSearchParams(location.search).get("next")));
  } catch (error) {
    document.getElementById("auth-error").textContent = error.message;
  }
});

// Where `next` leads, if that is on this site; the dashboard otherwise. Resolved once, the way
// the browser resolves it ("/\\evil.example/" is "//evil.example/", another site), and followed
// as that full URL: a path alone would be resolved again, and "/.//evil.example/" has the path
// "//evil.example/", which leads off the site. Our own pages never start with "//" either.
function sameOriginUrl(next) {
  if (!next) return "/dashboard.html";
  try {
    const url = new URL(next, location.origin);
    if (url.origin === location.origin && !url.pathname.startsWith("//")) return url.href;
  } catch {
    // not a URL at all
  }
  return "/dashboard.html";
}
