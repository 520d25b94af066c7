// HydroNet chat: post a message, read the Server-Sent Events reply as it streams in.
// Tokens are shown as plain text while they arrive; when the reply is done the
// server sends it once more as sanitized HTML (Markdown rendered and cleaned
// with nh3), which replaces the text. Nothing here builds HTML from the reply.
"use strict";

(function () {
  const root = document.querySelector("[data-testid=chat]");
  if (!root) return;
  const form = root.querySelector("[data-testid=chat-form]");
  const list = root.querySelector("[data-testid=messages]");
  const t = (key) => root.dataset["i18n" + key.charAt(0).toUpperCase() + key.slice(1)] || key;
  const csrfInput = root.querySelector("input[name=csrfmiddlewaretoken]");
  const csrfToken = csrfInput ? csrfInput.value : "";

  // The same API as any client, with the session's CSRF token; an error answer throws its message. What the page
  // shows is in its language: the server's messages are translated, the browser's own words are English
  // ("Failed to fetch"), and a status text is English too, or empty over HTTP/2.
  async function api(method, path, body, signal) {
    let response;
    try {
      response = await fetch(path, {
        method: method,
        headers: {
          "Content-Type": "application/json", "X-CSRFToken": csrfToken, "Accept": "text/event-stream, application/json",
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal,
        credentials: "same-origin",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      const failed = new Error(t("connectionFailed")); // no answer: offline, the server down, a proxy between
      failed.code = "connection_failed";
      throw failed;
    }
    if (!response.ok) {
      let message = t("status").replace("{status}", () => String(response.status));
      let code = "";
      try {
        const body = (await response.json()).error;
        message = describe(body);
        code = body.code;
      } catch (e) { /* not the API's error (a proxy's page): the status */ }
      // Logged out in another tab, or the session expired: say so, not DRF's "credentials were not provided".
      const ended = code === "not_authenticated"; // the API's code for a missing or failed credential
      // The open conversation deleted (in another tab, say): say so, not the API's bare "Not found."
      const gone = code === "not_found" && /^\/api\/conversations\/\d+/.test(path);
      const error = new Error(ended ? t("sessionEnded") : gone ? t("conversationGone") : message);
      error.status = response.status; // refused: nothing was done
      error.code = ended ? "session_ended" : code;
      throw error;
    }
    return response;
  }

  // An API error as a person reads it: its message, then what each refused field says
  // ("Invalid input. Ensure this field has no more than 200 characters.").
  function describe(error) {
    const said = [error.message];
    for (const value of Object.values(error.details || {})) {
      for (const text of Array.isArray(value) ? value : []) {
        if (typeof text === "string" && !said.includes(text)) said.push(text);
      }
    }
    return said.join(" ");
  }

  // The address of the page, and where the language switch returns to (base.html), follow the open conversation.
  function showAddress(path) {
    history.replaceState(null, "", path);
    const next = document.querySelector(".lang-switch input[name=next]");
    if (next) next.value = path;
  }

  // The open conversation: none on a new chat until its first question makes one.
  let conversationId = root.dataset.conversationId;
  const head = root.querySelector("[data-testid=chat-head]");

  // The conversation's title: the heading's data-title holds it ("" while it has none, when the heading shows
  // a placeholder that must not be taken for a title); the heading, the sidebar and the tab show it.
  const heading = root.querySelector("[data-testid=chat-title]");
  function showTitle(title) {
    const shown = title || t("untitled");
    heading.dataset.title = title;
    heading.textContent = shown;
    const active = root.querySelector("[data-testid=conversations] a.active");
    if (active) active.textContent = shown;
    document.title = shown + " · " + root.dataset.tenantName; // as templates/chat/chat.html builds it
  }

  // Rename and delete the open conversation; a refusal is shown as it came.
  async function change(method, body) {
    try {
      return await api(method, "/api/conversations/" + conversationId, body);
    } catch (error) {
      window.alert(error.message);
      return null;
    }
  }
  const renameButton = root.querySelector("[data-testid=chat-rename]");
  if (renameButton) {
    renameButton.addEventListener("click", async () => {
      const title = window.prompt(t("renamePrompt"), heading.dataset.title);
      if (title === null) return;
      const response = await change("PATCH", { title: title.trim() });
      if (!response) return;
      showTitle((await response.json()).title);
    });
  }
  const deleteButton = root.querySelector("[data-testid=chat-delete]");
  if (deleteButton) {
    deleteButton.addEventListener("click", async () => {
      if (!window.confirm(t("deleteConfirm"))) return;
      if (await change("DELETE")) window.location.assign(root.dataset.chatUrl);
    });
  }
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // Each finished reply gets a "Copy" button: its text, as shown, to the clipboard.
  function addCopy(bubble) {
    if (bubble.querySelector(".copy-reply") || !navigator.clipboard) return;
    const button = el("button", "link-button copy-reply", t("copy"));
    button.type = "button";
    button.dataset.testid = "copy-reply";
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(bubble.querySelector(".markdown").innerText.trim());
        button.textContent = t("copied");
      } catch (error) {
        button.textContent = t("copyFailed");
      }
      window.setTimeout(() => { button.textContent = t("copy"); }, 2000);
    });
    bubble.append(button);
  }
  list.querySelectorAll(".bubble.assistant").forEach((bubble) => {
    if (bubble.querySelector(".markdown").textContent.trim()) addCopy(bubble);
  });
  // The messages stay at their end while a reply streams, as long as the reader is there: scrolled up to read
  // something earlier, they stay where the reader put them (each token pulled them back down) until the reader
  // scrolls back to the end, or asks something.
  let following = true;
  let scrolledTo = 0; // where the page itself last put them
  const scroll = () => {
    list.scrollTop = list.scrollHeight;
    scrolledTo = list.scrollTop;
    following = true;
  };
  const follow = () => {
    if (following) scroll();
  };
  list.addEventListener("scroll", () => {
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 4) following = true; // at the end
    else if (list.scrollTop < scrolledTo - 1) following = false; // the reader scrolled up
  });
  // The wheel says so at once: a token arriving before the scroll event would put the messages back at their end.
  list.addEventListener("wheel", (event) => {
    if (event.deltaY < 0) following = false;
  }, { passive: true });
  // A conversation opens at its latest messages, where the next question goes; reloaded to show a reply written
  // elsewhere (below) while the reader was scrolled up, it opens where the reader was.
  const scrollKey = "hydronet-chat-scroll:" + conversationId;
  const keptScroll = window.sessionStorage.getItem(scrollKey);
  window.sessionStorage.removeItem(scrollKey);
  if (keptScroll === null) scroll();
  else {
    list.scrollTop = Number(keptScroll);
    scrolledTo = list.scrollTop;
    following = list.scrollHeight - list.scrollTop - list.clientHeight < 4;
  }

  let controller = null; // the turn this page is running, while it runs
  const draftKey = "hydronet-chat-draft:" + conversationId;

  // Opened while a reply was still being written (the page says so), the page looks again by itself, less often as it
  // goes, for about five minutes (a turn's hold ends within CHAT_TURN_HOLD_SECONDS, 30 s, of the turn, which lasts 300 s at most): once the
  // reply is stored (the last message, newer than what the page shows, a reply rather than a round that only called
  // tools) it reloads and shows it, the question being drafted and the reader's place kept. Two requests a look:
  // they count against the workspace's rate limit. Not while a turn of this page's own runs, nor once one has ended
  // (the note goes then).
  const WRITING_WAITS = [1000, 1500, 2000, 3000, 5000, 8000, 10000, 15000, 20000, ...Array(8).fill(30000)];
  async function watchWriting(note) {
    const after = lastStoredId();
    const messages = "/api/conversations/" + conversationId + "/messages?page_size=1";
    for (const wait of WRITING_WAITS) {
      await new Promise((resolve) => window.setTimeout(resolve, wait));
      if (!note.isConnected) return;
      if (controller) continue;
      try {
        const count = (await (await api("GET", messages)).json()).count;
        const last = count ? (await (await api("GET", messages + "&page=" + count)).json()).results[0] : null;
        if (!last || last.id <= after || last.role !== "assistant" || (last.tool_calls || []).length) continue;
      } catch (error) {
        return; // logged out, the conversation deleted, the rate limit: the note stays
      }
      if (controller || !note.isConnected) continue;
      const draft = form ? form.querySelector("textarea").value : "";
      if (draft.trim()) window.sessionStorage.setItem(draftKey, draft);
      if (!following) window.sessionStorage.setItem(scrollKey, String(list.scrollTop));
      window.location.reload();
      return;
    }
  }
  const writingNote = list.querySelector("[data-testid=chat-writing]");
  if (writingNote && conversationId) watchWriting(writingNote);

  if (!form) return;
  const input = form.querySelector("textarea");
  // The question's text, set by the page; its counter (static/js/counter.js) hears of it as of typing.
  const setInput = (text) => {
    input.value = text;
    input.dispatchEvent(new Event("input"));
  };
  const keptDraft = window.sessionStorage.getItem(draftKey); // drafted before the page reloaded to show a reply
  if (keptDraft) {
    window.sessionStorage.removeItem(draftKey);
    setInput(keptDraft);
    input.focus();
  }
  const send = form.querySelector("[data-testid=chat-send]");
  const stop = form.querySelector("[data-testid=chat-stop]");
  let stoppedAt = 0; // when this page last stopped a turn

  function toolPanel(data) {
    const panel = el("details", "tool-panel");
    panel.dataset.testid = "tool-panel";
    panel.dataset.callId = data.id;
    const summary = el("summary");
    summary.append(data.service + " · ");
    summary.append(el("code", "", data.tool));
    summary.append(" ");
    summary.append(el("span", "muted tool-state", t("running")));
    panel.append(summary);
    const body = el("div", "tool-body");
    body.append(el("strong", "", t("arguments")));
    body.append(scrollBox(JSON.stringify(data.arguments, sortedKeys, 2)));
    panel.append(body);
    return panel;
  }

  // A tool's arguments or result, which scrolls past its height: focusable, so the keyboard can scroll it too, as
  // the page shows a stored call (templates/chat/chat.html).
  function scrollBox(text) {
    const box = el("pre", "", text);
    box.tabIndex = 0;
    return box;
  }

  // A tool call's arguments with their keys sorted, as the page shows them after a reload (apps/chat/views.py):
  // the model's order is not stored (PostgreSQL's jsonb keeps its own).
  function sortedKeys(key, value) {
    if (!value || typeof value !== "object" || Array.isArray(value)) return value;
    return Object.fromEntries(Object.keys(value).sort().map((name) => [name, value[name]]));
  }

  // "failed · 98 ms" or "98 ms", as the page shows a stored call.
  function finishToolPanel(panel, data) {
    const took = data.duration_ms === null || data.duration_ms === undefined ? "" : data.duration_ms + " ms";
    const state = data.is_error ? [t("failed"), took].filter(Boolean).join(" · ") : took;
    panel.querySelector(".tool-state").textContent = state;
    if (data.is_error) panel.classList.add("failed");
    if (data.message_id) panel.dataset.messageId = data.message_id;
    const body = panel.querySelector(".tool-body");
    body.append(el("strong", "", t("result")));
    body.append(scrollBox(data.result));
  }

  async function readEvents(response, handle) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of raw.split("\n")) {
          if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) handle(type, JSON.parse(data.join("\n")));
      }
    }
  }

  // While a reply streams, Stop takes Send's place: the next question can be drafted (the server refuses a second
  // turn on a conversation while one runs), and is sent once the turn ends.
  function busy(on) {
    send.hidden = on;
    stop.hidden = !on;
  }

  // Leaving the page while a reply streams stops it: the server cancels the model's work when the page goes,
  // and keeps what came, marked incomplete. A click on a link that would leave asks first.
  // So does a form that would leave it (the language switch, Log out, the sidebar's search); not the chat's own.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[href]");
    if (!controller || !link || link.hasAttribute("download") || link.target === "_blank") return;
    if (link.getAttribute("href").startsWith("#")) return;
    if (!window.confirm(t("leaveWhileStreaming"))) event.preventDefault();
  });
  document.addEventListener("submit", (event) => {
    const leaving = event.target;
    if (!controller || leaving === form || leaving.target === "_blank" || event.defaultPrevented) return;
    if (!window.confirm(t("leaveWhileStreaming"))) event.preventDefault();
  });

  const stopTurn = () => {
    if (!controller) return;
    stoppedAt = Date.now();
    controller.abort();
  };
  stop.addEventListener("click", stopTurn);
  // Escape stops the reply too, wherever the focus is (the question being drafted meanwhile stays), except the
  // Escape that cancels an input method's composition (pinyin being typed): that one belongs to the input method.
  document.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Escape" && controller) {
      event.preventDefault();
      stopTurn();
    } else if (event.key === "Escape" && edited) {
      event.preventDefault();
      stopEditing(true);
    }
  });

  // A reply that stopped or failed keeps its Copy button for what it said, as it has after a reload.
  function copyIfSaid(bubble) {
    if (bubble.querySelector(".markdown").textContent.trim()) addCopy(bubble);
  }

  // The newest stored message the page shows (templates/chat/chat.html and each turn's events give their ids).
  function lastStoredId() {
    let last = 0;
    for (const node of list.querySelectorAll("[data-message-id]")) {
      last = Math.max(last, Number(node.dataset.messageId) || 0);
    }
    return last;
  }

  // A stopped turn's reply is kept as the server had it when it noticed the page stopped listening, a few
  // chunks past what the page showed. Once stored (the turn's last message, newer than what the page held when
  // the turn began), it replaces what the bubble shows, Markdown rendered and sanitized like any reply, so
  // what is shown is what is kept. Asked briefly; not found (nothing stored, or the page's next turn began),
  // the bubble stays as it is.
  async function showStored(bubble, id, before, turn, found) {
    const messages = "/api/conversations/" + id + "/messages?page_size=1";
    syncing = true;
    try {
      if (await findStored(bubble, id, before, turn, messages)) found();
    } finally {
      syncing = false;
    }
  }
  // Asked less often as it goes (two requests each time, about ten seconds in all): the polls count against the
  // workspace's rate limit (100 a minute on the free plan), which the member's next question needs.
  const STORED_WAITS = [300, 500, 800, 1200, 2000, 2500, 3000];
  async function findStored(bubble, id, before, turn, messages) {
    for (const wait of STORED_WAITS) {
      await new Promise((resolve) => window.setTimeout(resolve, wait));
      if (turn !== turns || id !== conversationId || !bubble.isConnected) return false;
      try {
        const count = (await (await api("GET", messages)).json()).count;
        if (!count) continue;
        const last = (await (await api("GET", messages + "&page=" + count)).json()).results[0];
        if (turn !== turns) return false;
        if (!last || last.id <= before || last.role !== "assistant" || (last.tool_calls || []).length) continue;
        bubble.querySelector(".markdown").innerHTML = last.html; // sanitized on the server (nh3)
        bubble.dataset.messageId = last.id;
        copyIfSaid(bubble);
        return true;
      } catch (error) {
        return false; // the page stays as it is
      }
    }
    return false;
  }

  function newBubble() {
    const node = el("div", "bubble assistant streaming");
    node.dataset.testid = "assistant-reply";
    node.setAttribute("aria-busy", "true"); // screen readers read the reply once, when it is complete
    node.append(el("div", "markdown"));
    list.append(node);
    return node;
  }

  // The last question can be answered again (POST .../retry): "Try again" after a turn that failed, was
  // stopped or was cut short, "Regenerate" after a complete answer, which then stands replaced. The page
  // brings the button when the conversation opens; each turn here ends by offering the one that fits.
  function wireRetry(button) {
    button.addEventListener("click", () => {
      if (controller) return;
      button.remove();
      let replacing = null; // the answer a Regenerate replaces: the last one that did not fail
      if (button.dataset.testid === "chat-regenerate") {
        const answers = list.querySelectorAll(".bubble.assistant:not(.error)");
        replacing = answers.length ? answers[answers.length - 1] : null;
      }
      const modelSelect = form.querySelector("select[name=model]");
      const body = { stream: true };
      if (modelSelect) body.model = modelSelect.value;
      meant(body, lastQuestion());
      runTurn("/retry", body, newBubble(), { offered: button, replacing: replacing });
    });
  }
  function offerRetry(answered) {
    // The page's note of a reply being written when it loaded goes too: that turn is over.
    const old = list.querySelector(
      "[data-testid=chat-retry], [data-testid=chat-regenerate], [data-testid=chat-writing]");
    if (old) old.remove();
    const button = el("button", (answered ? "link-button" : "button secondary") + " chat-retry",
                      t(answered ? "regenerate" : "retry"));
    button.type = "button";
    button.dataset.testid = answered ? "chat-regenerate" : "chat-retry";
    wireRetry(button);
    list.append(button);
  }
  const offered = list.querySelector("[data-testid=chat-retry], [data-testid=chat-regenerate]");
  if (offered) wireRetry(offered);

  // "Try again", "Regenerate" and an edit name the question they mean, the last one the page shows, when the page
  // knows its id: another tab may have asked a newer one since, which they would answer again or replace instead
  // (the server refuses them, 409 conversation_changed). A question asked here gets its id when its turn ends.
  function meant(body, question) {
    if (question && question.dataset.messageId) body.question = Number(question.dataset.messageId);
  }

  // The last question can be edited (POST .../edit): "Edit" puts it in the input, and sending it asks it
  // anew; the question and what answered it then stand replaced. Escape or "Cancel" leaves it as it was. A question
  // being drafted waits meanwhile: it comes back into the input when the edit is sent or cancelled.
  const editing = form.querySelector("[data-testid=chat-editing]");
  let edited = null; // the question being edited
  let aside = ""; // what was drafted when the edit began
  const lastQuestion = () => {
    const questions = list.querySelectorAll(".bubble.user:not(.replaced)");
    return questions.length ? questions[questions.length - 1] : null;
  };
  function stopEditing(clear) {
    if (edited && clear) setInput(aside);
    aside = "";
    edited = null;
    editing.hidden = true;
  }
  // Nothing to answer again or edit: what the page offered goes (a "Try again" or "Regenerate" leaves the Edit it
  // found on the page, for after its turn).
  function offerNothing() {
    const offers = "[data-testid=chat-retry], [data-testid=chat-regenerate], [data-testid=chat-edit]";
    for (const offer of list.querySelectorAll(offers)) offer.remove();
  }
  function offerEdit() {
    const old = list.querySelector("[data-testid=chat-edit]");
    if (old) old.remove();
    const question = lastQuestion();
    if (!question || !conversationId) return;
    const button = el("button", "link-button chat-edit", t("edit"));
    button.type = "button";
    button.dataset.testid = "chat-edit";
    button.addEventListener("click", () => {
      if (controller) return;
      if (!edited) aside = input.value;
      edited = question;
      setInput(question.dataset.content);
      editing.hidden = false;
      input.focus();
    });
    question.after(button);
  }
  editing.querySelector("[data-testid=chat-edit-cancel]").addEventListener("click", () => {
    stopEditing(true);
    input.focus();
  });
  // An answer that stands replaced, as the page shows it after a reload; the mark can be taken off again.
  function markReplaced(answer) {
    const note = el("div", "bubble-note", t("replaced"));
    answer.classList.add("replaced");
    answer.append(note);
    return () => {
      answer.classList.remove("replaced");
      note.remove();
    };
  }

  // The edited question and everything after it, up to the question that replaces it, stand replaced, as the
  // page shows them after a reload.
  function markEdited(question, replacement) {
    question.classList.add("replaced");
    question.append(el("div", "bubble-note", t("edited")));
    for (let node = question.nextElementSibling; node && node !== replacement; node = node.nextElementSibling) {
      if (node.matches(".bubble, .tool-panel")) node.classList.add("replaced");
    }
  }
  offerEdit();

  // A conversation made for a first question that was then refused (a quota, the member's daily limit, a
  // question too long) holds nothing: it is deleted again, so refusals do not fill the sidebar with empty
  // conversations.
  async function unmake(made) {
    const id = conversationId;
    conversationId = undefined;
    showAddress(root.dataset.chatUrl);
    made.item.replaceWith(...(made.placeholder ? [made.placeholder] : []));
    if (head) head.hidden = true;
    try { await api("DELETE", "/api/conversations/" + id); } catch (e) { /* it stays, empty */ }
  }

  // A turn the server refused (a limit, the rate limit, a conversation still busy), that never reached it, or that
  // was stopped before it could, asked nothing: the page shows what it showed before, and says why over the input
  // (if there is a why). The question goes back into the input (an edit is still being edited), and what was
  // offered ("Try again", "Regenerate") is offered again: offered on the refused question, it would answer the one
  // before it again.
  const refusal = form.querySelector("[data-testid=chat-refusal]");
  function refuse(message, body, bubble, was) {
    bubble.remove();
    if (was.question) was.question.remove();
    if (was.empty && !list.querySelector(".bubble")) list.prepend(was.empty);
    if (was.offered) list.append(was.offered);
    if (was.edited) { // still being edited: what was drafted meanwhile waits again
      edited = was.edited;
      editing.hidden = false;
      aside = input.value;
      setInput(body.content);
    } else giveBack(body.content);
    refusal.textContent = message;
    refusal.hidden = !message; // stopped: no reason to give
  }

  // A question that asked nothing goes back into the input, before what was drafted there while it was under way.
  function giveBack(content) {
    if (!content) return;
    const drafted = input.value.trim();
    if (drafted !== content.trim()) setInput(drafted ? content + "\n\n" + input.value : content);
  }

  // A failure in the page's language: the API's message (translated on the server) or the page's own words,
  // not the browser's ("network error", a JSON.parse message).
  function failure(error) {
    if (error.status || error.code) return error.message;
    return t(error.name === "SyntaxError" ? "unreadable" : "connectionFailed");
  }

  // A stopped turn frees its conversation once the server notices the client left: at its next token, or
  // after a tool call that is running. A question asked meanwhile (409 conversation_busy) waits for that.
  async function askOnceFree(path, body, signal) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api("POST", "/api/conversations/" + conversationId + path, body, signal);
      } catch (error) {
        const waiting = error.code === "conversation_busy" && Date.now() - stoppedAt < 60000 && attempt < 60;
        if (!waiting) throw error;
        await new Promise((resolve) => window.setTimeout(resolve, 500));
        if (signal.aborted) throw new DOMException("stopped", "AbortError");
      }
    }
  }

  let sessionEnded = false; // a turn found the member logged out: no "Try again" or "Edit" until a reload
  let shutOut = false; // a turn stopped because nothing more can be asked from this page (below)
  // A turn stopped between two calls because the member or the workspace changed (docs/api.md): nothing more can
  // be asked from this page, so no "Try again" or "Edit" (each refused with a 403, the question handed back with the
  // refusal), and the input and Send are disabled under the server's words. The value: whether a reload helps.
  // - access_changed: the member was deactivated or removed, demoted to viewer, or lost the permission; a reload
  //   shows the page they get now (the login page, or a viewer's page, which has no input);
  // - tenant_suspended: no request is answered until the workspace is reactivated, which its administrator does,
  //   as the words say: until then a reload shows the suspended workspace's page;
  // - tenant_cancelled: for good.
  const SHUT_OUT = { access_changed: true, tenant_suspended: false, tenant_cancelled: false };
  function shutOutBy(data) {
    shutOut = true;
    input.disabled = send.disabled = true;
    const picker = form.querySelector("select[name=model]");
    if (picker) picker.disabled = true;
    refusal.textContent = data.message;
    if (SHUT_OUT[data.code]) {
      const reload = el("a", "", t("reload"));
      reload.href = window.location.pathname + window.location.search;
      reload.dataset.testid = "chat-reload";
      refusal.append(" ", reload);
    }
    refusal.hidden = false;
  }

  // The models members may choose, as the workspace offers them now (GET /api/models). After a turn stopped because
  // its model was taken off the list, the picker offered it still, and sent it with the next question or "Try
  // again", refused (unknown_model). Built as the template builds it: no picker for a single model; the choice kept
  // if it is still offered, else the default.
  async function refreshModels() {
    let offered;
    try {
      offered = await (await api("GET", "/api/models")).json();
    } catch (error) {
      return; // the picker stays as it was: a model it no longer offers is refused, with the reason
    }
    let picker = form.querySelector("select[name=model]");
    if (offered.models.length < 2) {
      if (picker) picker.remove();
      return;
    }
    const chosen = picker && offered.models.includes(picker.value) ? picker.value : offered.default;
    if (!picker) {
      picker = el("select");
      picker.name = "model";
      picker.setAttribute("aria-label", t("model"));
      send.before(picker);
    }
    picker.replaceChildren(...offered.models.map((model) => {
      const option = el("option", "", model);
      option.value = model;
      return option;
    }));
    picker.value = chosen;
  }

  let turns = 0; // turns begun on this page: a stopped turn's reply is looked up only until the next begins
  let syncing = false; // a stopped turn's reply is being looked up

  // One streamed turn into `bubble`: `path` under the conversation (made first for a new chat's question).
  // `was`: what the page showed before, put back if the turn is refused: the new `question` (taken away), the
  // question being `edited`, the "Try again" or "Regenerate" button `offered`, a new chat's `empty` state; and
  // the answer a Regenerate is `replacing`, marked once a reply that replaces it is stored.
  async function runTurn(path, body, bubble, was) {
    let text = bubble.querySelector(".markdown");
    const turn = ++turns;
    // This turn's messages are newer. Unknown when it begins while a stopped turn's reply was still being
    // looked up: that reply may be stored, newer, and not on the page; this turn is then not looked up.
    const before = syncing ? null : lastStoredId();
    scroll();
    controller = new AbortController();
    busy(true);
    refusal.hidden = true;
    const panels = {};
    let answered = false;
    let made = null; // the conversation this turn made for its question
    let accepted = false; // the server took the turn (an edit is then stored): not refused
    let refused = false;
    // The replaced answer stands replaced once the server stores a reply naming it: as it streams one (kept if
    // stopped) or calls a tool. A retry that fails replaces nothing: the mark comes off again.
    let unmark = null;
    let toolCalled = false;
    const replaceAnswer = () => {
      if (was.replacing && !unmark) unmark = markReplaced(was.replacing);
    };
    const learnQuestion = (data) => { // the id of the question this turn answered: asked now, or before
      const question = was.question || lastQuestion();
      if (question && data.question_id) question.dataset.messageId = data.question_id;
    };
    try {
      if (!conversationId) {
        const conversation = await (await api("POST", "/api/conversations", {}, controller.signal)).json();
        conversationId = String(conversation.id);
        showAddress(root.dataset.chatUrl + conversationId + "/");
        const sidebar = root.querySelector("[data-testid=conversations]");
        const placeholder = sidebar.querySelector(".muted");
        if (placeholder) placeholder.remove();
        const item = el("li");
        const link = el("a", "active", body.content.slice(0, 60));
        link.href = root.dataset.chatUrl + conversationId + "/";
        item.append(link);
        sidebar.prepend(item);
        made = { item: item, placeholder: placeholder };
        if (head) { // its header: download, rename and delete without reloading the page
          head.querySelector("[data-testid=chat-export]").href = "/api/conversations/" + conversationId + "/export";
          head.hidden = false;
        }
      }
      const response = await askOnceFree(path, body, controller.signal);
      accepted = true;
      if (was.edited) markEdited(was.edited, was.question);
      let ended = false; // a done or error event came
      let stoppedBy = null; // the error event of a turn stopped because the member, workspace or model list changed
      let thinking = null; // "The model is thinking…", shown while a reasoning model reasons, until what comes next
      await readEvents(response, (type, data) => {
        if (thinking && type !== "thinking") {
          thinking.remove();
          thinking = null;
        }
        if (type === "thinking") {
          if (!thinking && !text.textContent) {
            thinking = el("div", "bubble-note thinking", t("thinking"));
            thinking.dataset.testid = "thinking";
            bubble.append(thinking);
          }
        } else if (type === "token") {
          replaceAnswer();
          text.textContent += data.text;
        } else if (type === "tool_call") {
          replaceAnswer();
          toolCalled = true;
          if (!text.textContent) bubble.remove();
          else { // what the model said before calling the tool: done streaming
            bubble.classList.remove("streaming");
            bubble.setAttribute("aria-busy", "false");
          }
          const panel = toolPanel(data);
          panels[data.id] = panel;
          list.append(panel);
          bubble = newBubble();
          text = bubble.querySelector(".markdown");
        } else if (type === "tool_result") {
          const panel = panels[data.id];
          if (panel) finishToolPanel(panel, data);
        } else if (type === "done") {
          replaceAnswer();
          ended = answered = true;
          learnQuestion(data);
          text.innerHTML = data.html; // sanitized on the server (nh3)
          bubble.classList.remove("streaming");
          bubble.dataset.messageId = data.message_id;
          if (data.status === "incomplete") { // the model stopped at its length limit, or its server's filter did
            bubble.classList.add("incomplete");
            bubble.append(el("div", "bubble-note", data.error || t("cutShort")));
          }
          if (data.html) addCopy(bubble);
          else { // nothing to copy: say so, as the page does after a reload
            const note = el("div", "bubble-note", t("emptyAnswer"));
            note.dataset.testid = "empty-answer";
            bubble.append(note);
          }
          // The first exchange titles a new conversation (unless it was renamed meanwhile).
          if (data.title && heading && !heading.dataset.title) showTitle(data.title);
        } else if (type === "error") {
          ended = true;
          learnQuestion(data);
          if (unmark && !toolCalled) unmark(); // stored as failed, a reply that replaces nothing
          bubble.classList.remove("streaming");
          bubble.classList.add("error");
          if (data.html) text.innerHTML = data.html; // what it said before it failed; sanitized on the server (nh3)
          bubble.append(el("div", "bubble-note", t("error").replace("{error}", () => data.message)));
          if (data.message_id) bubble.dataset.messageId = data.message_id;
          if (Object.hasOwn(SHUT_OUT, data.code) || data.code === "model_unavailable") stoppedBy = data;
          copyIfSaid(bubble);
          // The question titled a new conversation though its reply failed, as the sidebar shows.
          if (data.title && heading && !heading.dataset.title) showTitle(data.title);
        }
        follow();
      });
      if (thinking) thinking.remove(); // the stream ended while the model reasoned
      if (stoppedBy && Object.hasOwn(SHUT_OUT, stoppedBy.code)) shutOutBy(stoppedBy);
      else if (stoppedBy) await refreshModels(); // before Send and "Try again" are back
      if (!ended) { // the connection closed mid-reply (a proxy, a restart): say so rather than spin
        bubble.classList.remove("streaming");
        bubble.classList.add("incomplete");
        bubble.append(el("div", "bubble-note", t("cutShort")));
        copyIfSaid(bubble);
      }
    } catch (error) {
      bubble.classList.remove("streaming");
      if (error.name === "AbortError" && !conversationId) {
        // Stopped while a new chat's conversation was being made: nothing was asked. The page is as it was, the
        // question back in the input (it stayed on the page, "stopped", with no way to ask it again).
        refused = true;
        refuse("", body, bubble, was);
      } else if (error.name === "AbortError") {
        // An edit may have reached the server, which stores the question before anything else.
        if (was.edited && !accepted) markEdited(was.edited, was.question);
        bubble.classList.add("incomplete");
        bubble.append(el("div", "bubble-note", t("stopped")));
        copyIfSaid(bubble);
        if (conversationId && before !== null) showStored(bubble, conversationId, before, turn, replaceAnswer);
      } else if (error.code === "session_ended") { // nothing was asked: the question goes back, and a way in
        bubble.classList.add("error");
        const note = el("div", "bubble-note", error.message + " ");
        const login = el("a", "", t("logIn"));
        login.href = "/login/?next=" + encodeURIComponent(window.location.pathname);
        login.dataset.testid = "chat-log-in";
        note.append(login);
        bubble.append(note);
        giveBack(body.content);
        sessionEnded = true;
      } else if (!accepted) {
        refused = true;
        if (made) await unmake(made);
        refuse(failure(error), body, bubble, was);
        if (error.code === "unknown_model") await refreshModels(); // taken off the list since the page opened
      } else {
        bubble.classList.add("error");
        bubble.append(el("div", "bubble-note", t("error").replace("{error}", () => failure(error))));
      }
    } finally {
      bubble.setAttribute("aria-busy", "false");
      controller = null;
      busy(false);
      // Without a conversation (its creation failed) there is no question to answer again; without a session,
      // nothing can be asked until the member logs in again. A refused turn left what was offered as it was.
      // Nor once the member or the workspace changed so that nothing more can be asked here (SHUT_OUT).
      if (conversationId && !sessionEnded && !shutOut && !refused) offerRetry(answered);
      if (shutOut) offerNothing();
      else if (!sessionEnded) offerEdit();
      input.focus();
      follow();
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (!content || controller || shutOut) return;
    const empty = list.querySelector("[data-testid=chat-empty]");
    if (empty) empty.remove();
    const retry = list.querySelector("[data-testid=chat-retry], [data-testid=chat-regenerate]");
    if (retry) retry.remove(); // a new question instead
    const editButton = list.querySelector("[data-testid=chat-edit]");
    if (editButton) editButton.remove();
    const path = edited ? "/edit" : "/messages";
    const was = { empty: empty, offered: retry, edited: edited }; // marked as edited once the server takes it
    const drafted = edited ? aside : ""; // what waited while the question was edited
    stopEditing(false);
    const question = el("div", "bubble user", content);
    question.dataset.testid = "user-question";
    question.dataset.content = content;
    list.append(question);
    was.question = question;
    const bubble = newBubble();
    setInput(drafted);
    const modelSelect = form.querySelector("select[name=model]");
    const body = { content: content, stream: true };
    if (modelSelect) body.model = modelSelect.value;
    if (was.edited) meant(body, was.edited);
    await runTurn(path, body, bubble, was);
  });

  // A new chat's suggested questions: one click asks it.
  for (const suggestion of list.querySelectorAll("[data-testid=chat-suggestion]")) {
    suggestion.addEventListener("click", () => {
      if (controller || shutOut) return;
      setInput(suggestion.textContent.trim());
      form.requestSubmit();
    });
  }

  // Enter sends (Shift+Enter breaks the line), but not while a reply streams: what is drafted then waits. Where the
  // primary pointer is a finger (a phone's keyboard has no Shift), Enter breaks the line and Send sends. The Enter
  // that confirms an input method's composition is the input method's: Safari reports it with keyCode 229 and
  // isComposing false.
  const touch = window.matchMedia("(pointer: coarse)");
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229 || touch.matches) return;
    event.preventDefault();
    if (!controller) form.requestSubmit();
  });
  send.disabled = false; // wired: the page can send now
})();
