// The dashboard's own script (docs/dashboard.md). htmx does the polling and swapping; this
// only handles the bearer token: it asks for one when the server requires tokens, keeps it
// in this tab's sessionStorage (gone when the tab closes, never in a cookie, never sent
// anywhere but this server), and adds it to each of htmx's requests.
(function () {
  "use strict";

  var KEY = "forestflow.token";

  function token() {
    return window.sessionStorage.getItem(KEY);
  }

  function authRequired() {
    return document.body.getAttribute("data-auth") === "required";
  }

  function element(id) {
    return document.getElementById(id);
  }

  function askForToken(message) {
    element("token-message").textContent = message || "";
    document.body.classList.add("needs-token");
    element("token-form").hidden = false;
    element("sign-out").hidden = true;
    element("token").focus();
  }

  function useToken(value) {
    window.sessionStorage.setItem(KEY, value);
    document.body.classList.remove("needs-token");
    element("token-form").hidden = true;
    element("sign-out").hidden = false;
    window.htmx.trigger(document.body, "ff-auth");
  }

  document.addEventListener("DOMContentLoaded", function () {
    element("token-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var input = element("token");
      var value = input.value.trim();
      input.value = "";
      if (value) {
        useToken(value);
      }
    });
    element("sign-out").addEventListener("click", function () {
      window.sessionStorage.removeItem(KEY);
      askForToken("");
    });
    if (!authRequired()) {
      return;
    }
    if (token()) {
      element("sign-out").hidden = false;
    } else {
      askForToken("");
    }
  });

  // no request without a token where one is required: it could only be refused
  document.addEventListener("htmx:confirm", function (event) {
    if (authRequired() && !token()) {
      event.preventDefault();
    }
  });

  document.addEventListener("htmx:configRequest", function (event) {
    var value = token();
    if (value) {
      event.detail.headers.Authorization = "Bearer " + value;
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr.status === 401 && authRequired()) {
      window.sessionStorage.removeItem(KEY);
      askForToken("The server refused this token (unknown or revoked). Enter another.");
    }
  });
})();
