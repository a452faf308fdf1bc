// The signup page's behaviour: each form posts JSON to the API with fetch
// and shows the answer next to itself. No framework, nothing inline (the
// CSP allows only this file). A key is only ever put into the page's text:
// never into a URL, the title, web storage or a cookie.
'use strict';

(() => {
  const byId = (id) => document.getElementById(id);

  /** Sends one request; resolves to {status, data, retryAfter}. status 0: no answer. */
  async function callApi(method, path, { body, key } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key !== undefined) headers['X-API-Key'] = key;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        redirect: 'error',
      });
    } catch (_) {
      return { status: 0, data: null, retryAfter: null };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      // Not JSON (a proxy's error page, say): reported by status below.
    }
    return { status: response.status, data, retryAfter: response.headers.get('Retry-After') };
  }

  function seconds(retryAfter) {
    const n = Number.parseInt(retryAfter || '', 10);
    if (!Number.isFinite(n) || n <= 0) return 'Try again in a moment.';
    return n === 1 ? 'Try again in 1 second.' : `Try again in ${n} seconds.`;
  }

  /**
   * The API's own `detail` text plus a plain-words hint, and the field it is
   * about, for a failed request of `form` ('signup', 'check' or 'rotate').
   */
  function explain(form, result) {
    const detail = result.data && typeof result.data.detail === 'string' ? result.data.detail : null;
    if (result.status === 0) {
      return { detail: 'Could not reach the server.', hint: 'Check your connection and try again.' };
    }
    if (detail === null) {
      return { detail: `The server answered with status ${result.status}.`, hint: 'Try again later.' };
    }
    let hint = '';
    let field = null;
    switch (result.status) {
      case 400:
        if (detail.startsWith('Password')) field = 'password';
        else if (detail.toLowerCase().includes('email')) field = 'email';
        break;
      case 401:
        if (form === 'rotate') {
          hint = 'Check both the email and the password.';
          field = 'password';
        }
        break;
      case 403:
        if (form === 'check') {
          hint = 'The key may have been replaced or revoked. Replace it below with your email and password.';
          field = 'api_key';
        } else if (detail.includes('domain')) {
          field = 'email';
        } else {
          hint = 'Ask the administrator of this server for an account.';
        }
        break;
      case 409:
        hint = 'This address already has an account. Lost its key? Get a new one under “Lost or leaked key?”.';
        field = 'email';
        break;
      case 429:
        hint = `Too many attempts from your network. ${seconds(result.retryAfter)}`;
        break;
      case 503:
        hint = `The server is busy. ${seconds(result.retryAfter)}`;
        break;
      default:
        if (result.status >= 500) hint = 'Something went wrong on the server. Try again later.';
    }
    return { detail, hint, field };
  }

  /** Replaces a message region's content with paragraphs, safely (text only). */
  function say(region, kind, lines) {
    region.className = `message is-${kind}`;
    region.replaceChildren(
      ...lines.filter(Boolean).map(([text, cls]) => {
        const p = document.createElement('p');
        if (cls) p.className = cls;
        p.textContent = text;
        return p;
      }),
    );
  }

  function clearInvalid(form) {
    for (const input of form.querySelectorAll('input')) input.removeAttribute('aria-invalid');
  }

  /** Shows a failure next to `form`, flags the field it is about and focuses it. */
  function fail(form, region, name, result) {
    const { detail, hint, field } = explain(name, result);
    say(region, 'error', [[detail, 'detail'], hint && [hint]]);
    const input = field && form.elements.namedItem(field);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  /** Wires `form` so that submitting it runs `send` once at a time, never a GET. */
  function onSubmit(form, pendingText, send) {
    const button = form.querySelector('button[type="submit"]');
    const idle = button.textContent;
    // A field flagged by the last answer is unflagged once it is edited.
    form.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (form.getAttribute('aria-busy') === 'true') return;
      form.setAttribute('aria-busy', 'true');
      button.disabled = true;
      button.textContent = pendingText;
      clearInvalid(form);
      try {
        await send();
      } finally {
        form.removeAttribute('aria-busy');
        button.disabled = false;
        button.textContent = idle;
      }
    });
  }

  /** Puts a freshly issued key in its panel and moves focus there. */
  function revealKey(panel, key) {
    panel.querySelector('.key-value').textContent = key;
    panel.querySelector('.copy-status').textContent = '';
    panel.hidden = false;
    panel.focus();
  }

  function wireKeyForm(name, path, pendingText, successText) {
    const form = byId(`${name}-form`);
    if (!form) return; // signups closed: the server left the form out
    const region = byId(`${name}-message`);
    const panel = byId(`${name}-key`);
    onSubmit(form, pendingText, async () => {
      // A key already shown stays until a new one replaces it: it is shown
      // only once, so a second submit must not take it off the screen.
      say(region, 'pending', [[pendingText]]);
      const body = { email: form.elements.email.value, password: form.elements.password.value };
      const result = await callApi('POST', path, { body });
      if (result.status === 200 && result.data && typeof result.data.api_key === 'string') {
        form.reset();
        say(region, 'ok', [[successText]]);
        revealKey(panel, result.data.api_key);
      } else {
        fail(form, region, name, result);
      }
    });
  }

  function wireCheckForm() {
    const form = byId('check-form');
    const region = byId('check-message');
    const account = byId('check-result');
    onSubmit(form, 'Checking…', async () => {
      account.hidden = true;
      const key = form.elements.api_key.value.trim();
      if (key === '') {
        say(region, 'error', [['Enter an API key first.', 'detail'], ['It starts with ki_.']]);
        form.elements.api_key.setAttribute('aria-invalid', 'true');
        form.elements.api_key.focus();
        return;
      }
      say(region, 'pending', [['Checking…']]);
      const result = await callApi('GET', '/api/auth/me', { key });
      if (result.status !== 200 || !result.data) {
        fail(form, region, 'check', result);
        return;
      }
      const me = result.data;
      byId('check-email').textContent = me.email;
      byId('check-tier').textContent = me.tier;
      byId('check-credits').textContent = String(me.credits);
      const created = byId('check-created');
      created.dateTime = me.created_at;
      const when = new Date(me.created_at);
      created.textContent = Number.isNaN(when.getTime())
        ? me.created_at
        : when.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
      say(region, 'ok', [['This key works.']]);
      account.hidden = false;
    });
  }

  /** Copy buttons: the clipboard when the browser allows it, else select the key for Ctrl+C. */
  function wireCopyButtons() {
    for (const button of document.querySelectorAll('button.copy')) {
      button.addEventListener('click', async () => {
        const value = byId(button.dataset.copy);
        const status = button.closest('.key-panel').querySelector('.copy-status');
        try {
          if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
          await navigator.clipboard.writeText(value.textContent);
          status.textContent = 'Copied to the clipboard.';
        } catch (_) {
          const range = document.createRange();
          range.selectNodeContents(value);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          status.textContent = 'The key is selected: press Ctrl+C (⌘C on a Mac) to copy it.';
        }
      });
    }
  }

  wireKeyForm(
    'signup',
    '/api/auth/signup',
    'Creating…',
    'Account created. Your key is below: store it now.',
  );
  wireKeyForm(
    'rotate',
    '/api/auth/keys/rotate',
    'Replacing…',
    'Key replaced: the old one no longer works. Store the new one now.',
  );
  wireCheckForm();
  wireCopyButtons();
})();
