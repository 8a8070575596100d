// Security keys and passkeys (WebAuthn): registering one on the security credentials page, and
// using one at the sign-in's MFA step. The server makes the options and checks the answers;
// this script only carries them between the page and the browser's authenticator.
"use strict";
(function () {
  function fromB64url(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }
  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function descriptors(list) {
    return (list || []).map(function (d) {
      return { type: d.type, id: fromB64url(d.id), transports: d.transports };
    });
  }
  function say(text) {
    var status = document.getElementById("webauthn-status");
    if (status) { status.textContent = text; }
  }
  if (!window.PublicKeyCredential) { say("This browser has no security key support."); return; }

  // Registration: fetch the options (the form's CSRF token proves the page is ours), create the
  // credential, post it with the form.
  var register = document.getElementById("webauthn-form");
  if (register) {
    say("");
    register.addEventListener("submit", function (event) {
      if (register.elements.credential.value) { return; }
      event.preventDefault();
      var body = new URLSearchParams({ csrf: register.elements.csrf.value });
      fetch(register.dataset.options, { method: "POST", body: body, credentials: "same-origin",
                                        headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error("the broker refused"); } return r.json(); })
        .then(function (o) {
          return navigator.credentials.create({ publicKey: {
            rp: o.rp, challenge: fromB64url(o.challenge),
            user: { id: fromB64url(o.user.id), name: o.user.name, displayName: o.user.displayName },
            pubKeyCredParams: o.pubKeyCredParams, timeout: o.timeout,
            excludeCredentials: descriptors(o.excludeCredentials),
            authenticatorSelection: o.authenticatorSelection, attestation: o.attestation } });
        })
        .then(function (c) {
          register.elements.credential.value = JSON.stringify({
            id: c.id, rawId: toB64url(c.rawId), type: c.type,
            response: { clientDataJSON: toB64url(c.response.clientDataJSON),
                        attestationObject: toB64url(c.response.attestationObject),
                        transports: c.response.getTransports ? c.response.getTransports() : [] },
            clientExtensionResults: c.getClientExtensionResults() });
          register.submit();
        })
        .catch(function (e) { say("The security key was not registered: " + e.message); });
    });
  }

  // Authentication: the options are on the page; the assertion goes back in the MFA form.
  var use = document.getElementById("webauthn-use");
  if (use) {
    say("");
    use.addEventListener("click", function () {
      var o = JSON.parse(use.dataset.options);
      navigator.credentials.get({ publicKey: {
        challenge: fromB64url(o.challenge), rpId: o.rpId, timeout: o.timeout,
        allowCredentials: descriptors(o.allowCredentials),
        userVerification: o.userVerification } })
        .then(function (c) {
          var form = document.getElementById("mfa-form");
          form.elements.assertion.value = JSON.stringify({
            id: c.id, rawId: toB64url(c.rawId), type: c.type,
            response: { clientDataJSON: toB64url(c.response.clientDataJSON),
                        authenticatorData: toB64url(c.response.authenticatorData),
                        signature: toB64url(c.response.signature),
                        userHandle: c.response.userHandle ? toB64url(c.response.userHandle) : null },
            clientExtensionResults: c.getClientExtensionResults() });
          form.submit();
        })
        .catch(function (e) { say("The security key was not used: " + e.message); });
    });
  }
})();
