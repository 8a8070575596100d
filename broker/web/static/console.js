// The console's only script: copy buttons and the session countdown. Everything else on the
// page works without it.
"use strict";
(function () {
  var status = document.getElementById("copied");
  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.getElementById(button.dataset.copy).textContent;
      navigator.clipboard.writeText(text).then(function () {
        status.textContent = "Copied.";
      }, function () {
        status.textContent = "Could not copy: select the text and copy it instead.";
      });
    });
  });
  var expires = document.getElementById("expires");
  var countdown = document.getElementById("countdown");
  if (!expires || !countdown) { return; }
  var end = Number(expires.dataset.expiresAt) * 1000;
  function tick() {
    var left = Math.max(0, Math.floor((end - Date.now()) / 1000));
    if (left === 0) { countdown.textContent = "(expired: sign in again)"; return; }
    var h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
    countdown.textContent = "(" + (h ? h + " h " : "") + m + " min " + s + " s left)";
    setTimeout(tick, 1000);
  }
  tick();
})();
