/* "Test connection" / "Send test email" on the Gmail account form.
 *
 * Posts the form as it is (unsaved values, the CSRF token, the app password if one was typed)
 * to the button's formaction and shows the answer under the buttons, so the form keeps what
 * was typed. Without JavaScript the buttons submit to the same views, which answer with a page.
 */
"use strict";
{
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
