/* The Gmail account form.
 *
 * 1. Shows the fields of the chosen authentication method only (app password or OAuth2).
 *    Without JavaScript both stay visible, each saying which method it is for.
 * 2. "Test connection" / "Send test email": posts the form as it is (unsaved values, the CSRF
 *    token, the app password if one was typed) to the button's formaction and shows the answer
 *    under the buttons, so the form keeps what was typed. Without JavaScript the buttons submit
 *    to the same views, which answer with a page.
 */
"use strict";
{
    const showMethod = () => {
        const select = document.getElementById("id_auth_method");
        if (!select) {
            return;
        }
        document.querySelectorAll(".gmail-smtp-method").forEach((element) => {
            element.hidden = !element.classList.contains("gmail-smtp-method-" + select.value);
        });
    };
    document.addEventListener("change", (event) => {
        if (event.target.id === "id_auth_method") {
            showMethod();
        }
    });
    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", showMethod);
    } else {
        showMethod();
    }

    document.addEventListener("click", async (event) => {
        const button = event.target.closest("button[data-gmail-smtp-action]");
        if (!button || !button.form) {
            return;
        }
        event.preventDefault();
        const results = document.getElementById("gmail-smtp-results");
        const buttons = document.querySelectorAll("button[data-gmail-smtp-action]");
        buttons.forEach((b) => { b.disabled = true; });
        results.setAttribute("aria-busy", "true");
        results.textContent = button.dataset.busy || "…";
        try {
            const response = await fetch(button.formAction, {
                method: "POST",
                body: new FormData(button.form),
                headers: {"X-Requested-With": "XMLHttpRequest"},
                credentials: "same-origin",
            });
            if (!response.ok) {
                throw new Error(String(response.status));
            }
            // A fragment rendered (and escaped) by Django's templates.
            results.innerHTML = await response.text();
        } catch (error) {
            results.textContent = results.dataset.failedText + " (" + error.message + ")";
        } finally {
            results.removeAttribute("aria-busy");
            buttons.forEach((b) => { b.disabled = false; });
        }
    });
}
