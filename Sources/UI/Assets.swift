/// The pages under `/ui/`, compiled into the binary: nothing is read from disk or fetched from a network when a page
/// is viewed. Plain HTML, CSS and JavaScript drawing SVG (no chart library: see README.md).
public enum UIAssets {
    /// A file of the pages: its media type and bytes.
    public struct Asset: Sendable {
        public let contentType: String
        public let body: String
    }

    /// The asset at `path` below `/ui/` (`""` is the page itself), or `nil`.
    public static func asset(_ path: String) -> Asset? {
        switch path {
        case "", "index.html": Asset(contentType: "text/html; charset=utf-8", body: indexHTML)
        case "app.js": Asset(contentType: "text/javascript; charset=utf-8", body: appJS)
        case "app.css": Asset(contentType: "text/css; charset=utf-8", body: appCSS)
        default: nil
        }
    }

    /// Every asset's path (for tests and the size figure).
    public static let paths = ["", "app.js", "app.css"]

    static let indexHTML = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta http-equiv="Content-Security-Policy" content="default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'">
        <title>metricsd</title>
        <link rel="stylesheet" href="/ui/app.css">
        </head>
        <body>
        <header>
          <strong>metricsd</strong>
          <nav aria-label="Views">
            <a href="#/overview" data-view="overview">Overview</a>
            <a href="#/funnel" data-view="funnel">Funnel</a>
            <a href="#/retention" data-view="retention">Retention</a>
            <a href="#/experiment" data-view="experiment">Experiment</a>
            <a href="#/series" data-view="series">Series</a>
          </nav>
        </header>
        <form id="token-form" hidden>
          <label for="token">This metricsd needs its token ([auth] token). It is kept for this tab only and sent as a header.</label>
          <input id="token" type="password" autocomplete="current-password" required>
          <button type="submit">Use token</button>
        </form>
        <main id="view" tabindex="-1" aria-live="polite"></main>
        <script src="/ui/app.js"></script>
        </body>
        </html>
        """#

    static let appCSS = #"""
        :root { --fg: #1d2733; --muted: #5b6777; --line: #d5dbe3; --bar: #3a6ea5; --bg: #fff; font-family: system-ui, sans-serif; }
        body { margin: 0; color: var(--fg); background: var(--bg); }
        header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
        nav a { margin-right: 1rem; color: var(--bar); }
        nav a[aria-current="page"] { font-weight: 600; text-decoration: none; }
        main { padding: 1rem; max-width: 70rem; }
        #result { overflow-x: auto; }
        a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible { outline: 3px solid #f0a020; outline-offset: 1px; }
        svg { max-width: 100%; height: auto; }
        form.query { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: 1rem; }
        form.query label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
        form.query label[hidden] { display: none; }
        input, button, select { font: inherit; padding: .3rem .4rem; }
        table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
        th, td { text-align: left; padding: .25rem .8rem .25rem 0; border-bottom: 1px solid var(--line); }
        td.num { text-align: right; font-variant-numeric: tabular-nums; }
        .error { color: #a12020; white-space: pre-wrap; }
        svg text { font-size: 12px; fill: var(--fg); }
        svg rect.bar { fill: var(--bar); }
        svg text.inside { fill: #fff; }
        svg line.whisker { stroke: var(--fg); stroke-width: 2; }
        svg circle.point { fill: var(--bar); }
        table.heat td { min-width: 3.5rem; }
        #token-form { padding: 1rem; display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
        #token-form[hidden] { display: none; }
        @media (max-width: 40rem) {
          main { padding: .5rem; } th, td { padding-right: .4rem; }
          form.query { flex-direction: column; align-items: stretch; }
          form.query input, form.query select { width: 100%; box-sizing: border-box; }
          header { gap: .5rem; }
        }
        """#

    static let appJS = #"""
        "use strict";
        // metricsd pages: each view's state lives in the URL after "#/" (shareable); times are shown in the
        // browser's zone and sent in UTC; the API's errors are shown as they come.
        const view = document.getElementById("view");
        const tokenForm = document.getElementById("token-form");
        let pendingToken = null;

        function token() { return sessionStorage.getItem("metricsd-token"); }

        tokenForm.addEventListener("submit", (e) => {
          e.preventDefault();
          sessionStorage.setItem("metricsd-token", document.getElementById("token").value);
          tokenForm.hidden = true;
          if (pendingToken) { const go = pendingToken; pendingToken = null; go(); }
        });

        // GET an API path as JSON; a 401 asks for the token once, then the view is drawn again.
        async function api(path) {
          const headers = {};
          if (token()) headers["Authorization"] = "Token " + token();
          const response = await fetch(path, { headers });
          const text = await response.text();
          let body;
          try { body = JSON.parse(text); } catch { body = { error: text }; }
          if (response.status === 401) {
            sessionStorage.removeItem("metricsd-token");
            tokenForm.hidden = false;
            document.getElementById("token").focus();
            pendingToken = route;
            throw new Error("authorization required: " + (body.error || ""));
          }
          if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
          return body;
        }

        function el(tag, attrs = {}, ...children) {
          const node = tag.startsWith("svg:")
            ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
            : document.createElement(tag);
          for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
          for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
          return node;
        }

        function showError(where, error) {
          where.append(el("p", { class: "error", role: "alert", id: "error" }, error.message || String(error)));
        }

        const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
        const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });

        // #/view?key=value&…
        function parseHash() {
          const h = location.hash.replace(/^#\/?/, "");
          const [name, query] = h.split("?");
          return { name: name || "overview", params: new URLSearchParams(query || "") };
        }

        function setHash(name, params) {
          const q = params.toString();
          const next = "#/" + name + (q ? "?" + q : "");
          if (location.hash !== next) location.hash = next; else route();
        }

        // Whether the view fits the window's width (no sideways scrolling at phone width), noted on <html> after each
        // draw for whoever checks.
        function noteFit() {
          document.documentElement.dataset.fits = String(document.documentElement.scrollWidth <= window.innerWidth + 1);
        }
        new MutationObserver(() => requestAnimationFrame(noteFit)).observe(view, { childList: true, subtree: true });

        let timer = null;
        function route() {
          if (timer) { clearInterval(timer); timer = null; }
          const { name, params } = parseHash();
          for (const a of document.querySelectorAll("nav a")) {
            if (a.dataset.view === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
          }
          view.replaceChildren();
          (views[name] || views.overview)(params);
        }

        // Overview: live ingest from /health, refreshed every 3 s; rates from the counters' change between reads.
        function overview() {
          const heading = el("h1", {}, "Overview");
          const body = el("div");
          view.append(heading, body);
          let last = null;
          async function draw() {
            let health;
            try { health = await api("/health"); } catch (e) { body.replaceChildren(); showError(body, e); return; }
            const c = health.counters || {};
            const now = Date.now();
            const rate = (k) => (last && now > last.t) ? ((c[k] || 0) - (last.c[k] || 0)) * 1000 / (now - last.t) : null;
            const rows = [
              ["status", health.status + " — " + (health.message || "")],
              ["lines/s (udp, tcp, http)", ["udp_lines", "tcp_lines", "http_lines"].map((k) => rate(k) === null ? "…" : number.format(rate(k))).join(", ")],
              ["events/s (udp, tcp, http)", ["udp_events", "tcp_events", "http_events"].map((k) => rate(k) === null ? "…" : number.format(rate(k))).join(", ")],
            ];
            const table = el("table", { id: "overview" });
            for (const [k, v] of rows) table.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v)));
            const figures = ["series_active", "series_overflowed", "events_accepted", "events_invalid",
              "udp_lines", "tcp_lines", "http_lines", "udp_events", "tcp_events", "http_events", "dead_letters_stored", "dead_letters_dropped",
              "store_pending_cells", "store_corrupt_rows", "outbox_rows_quarantined"];
            for (const k of figures) {
              if (!(k in c)) continue;
              table.append(el("tr", {}, el("th", { scope: "row" }, k.replaceAll("_", " ")),
                el("td", { class: "num", "data-metric": k, "data-value": c[k] }, number.format(c[k]))));
            }
            for (const [name, f] of [["InfluxDB outbox", health.forwarding], ["ClickHouse outbox", health.events_forwarding]]) {
              if (!f) continue;
              const backlog = "backlog_points" in f ? f.backlog_points + " points" : f.backlog_events + " events";
              table.append(el("tr", {}, el("th", { scope: "row" }, name),
                el("td", { "data-metric": name === "InfluxDB outbox" ? "influx_backlog" : "clickhouse_backlog" },
                  f.status + ", " + backlog + (f.last_error ? " — last error: " + f.last_error : ""))));
            }
            body.replaceChildren(table, el("p", {}, "Updated " + new Date(now).toLocaleTimeString()));
            last = { t: now, c };
          }
          draw();
          timer = setInterval(draw, 3000);
        }

        // A time for a datetime-local input, in the browser's zone, and back to UTC (RFC 3339) for the API.
        function localInput(ms) {
          const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
          return d.toISOString().slice(0, 16);
        }
        function utc(local) { return new Date(local).toISOString(); }

        // Funnel: steps from the event names seen (autocomplete), window, range, breakdown; bars per step.
        async function funnel(params) {
          const now = Date.now();
          const steps = params.get("steps") || "";
          const windowText = params.get("window") || "1h";
          const from = params.get("from") || new Date(now - 7 * 86400000).toISOString();
          const to = params.get("to") || new Date(now).toISOString();
          const breakdown = params.get("breakdown") || "";
          const form = el("form", { class: "query", "aria-label": "Funnel" },
            el("label", {}, "Steps (comma-separated)", el("input", { name: "steps", value: steps, list: "event-names", required: "" })),
            el("label", {}, "Window", el("input", { name: "window", value: windowText, size: "6" })),
            el("label", {}, "From", el("input", { name: "from", type: "datetime-local", value: localInput(Date.parse(from)) })),
            el("label", {}, "To", el("input", { name: "to", type: "datetime-local", value: localInput(Date.parse(to)) })),
            el("label", {}, "Breakdown (property)", el("input", { name: "breakdown", value: breakdown })),
            scopeField(params),
            el("button", { type: "submit" }, "Show"),
            el("datalist", { id: "event-names" }));
          form.addEventListener("submit", (e) => {
            e.preventDefault();
            const f = new FormData(form);
            const next = new URLSearchParams();
            next.set("steps", f.get("steps"));
            next.set("window", f.get("window"));
            next.set("from", utc(f.get("from")));
            next.set("to", utc(f.get("to")));
            if (f.get("breakdown")) next.set("breakdown", f.get("breakdown"));
            if (f.get("scope") === "fleet") next.set("scope", "fleet");
            setHash("funnel", next);
          });
          const result = el("div", { id: "result" });
          view.append(el("h1", {}, "Funnel"), form, result);
          api("/query?q=" + encodeURIComponent('SHOW TAG VALUES FROM "events" WITH KEY = "event"')).then((r) => {
            const list = form.querySelector("datalist");
            for (const s of (r.results?.[0]?.series || [])) for (const v of s.values || []) list.append(el("option", { value: v[1] }));
          }).catch(() => {});
          if (!steps) { result.append(el("p", {}, "Pick at least two steps.")); return; }
          const query = new URLSearchParams({ steps, window: windowText, from, to });
          if (breakdown) query.set("breakdown", breakdown);
          if (params.get("scope") === "fleet") query.set("scope", "fleet");
          let answer;
          try { answer = await api("/api/v1/funnel?" + query); } catch (e) { showError(result, e); return; }
          result.append(funnelChart(answer.steps, "all users"));
          result.append(funnelTable(answer.steps, "funnel"));
          for (const [value, part] of Object.entries(answer.breakdown || {})) {
            result.append(el("h2", {}, breakdown + " = " + value));
            result.append(funnelChart(part.steps, breakdown + " = " + value));
            result.append(funnelTable(part.steps, "funnel-" + value));
          }
        }

        function funnelChart(steps, title) {
          const width = 640, height = 220, gap = 12;
          const top = Math.max(1, ...steps.map((s) => s.users));
          const w = (width - gap * (steps.length + 1)) / Math.max(1, steps.length);
          const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height + 40}`, role: "img", "aria-label": "Funnel, " + title, width: "100%" });
          steps.forEach((s, i) => {
            const h = height * s.users / top;
            const x = gap + i * (w + gap);
            svg.append(el("svg:rect", { class: "bar", x, y: height - h, width: w, height: h }));
            // The count above its bar, or inside it (in white) when the bar reaches the top.
            const inside = h > height - 16;
            svg.append(el("svg:text", { x: x + 4, y: inside ? height - h + 16 : height - h - 4, class: inside ? "inside" : "" },
              number.format(s.users)));
            svg.append(el("svg:text", { x: x + 4, y: height + 16 }, s.event));
          });
          return svg;
        }

        function funnelTable(steps, id) {
          const table = el("table", { id },
            el("tr", {}, ...["step", "users", "from first", "from previous", "drop-off", "median time from first"].map((h) => el("th", { scope: "col" }, h))));
          for (const s of steps) {
            table.append(el("tr", { "data-event": s.event },
              el("td", {}, s.event),
              el("td", { class: "num", "data-users": s.users }, number.format(s.users)),
              el("td", { class: "num" }, percent.format(s.conversion_from_first)),
              el("td", { class: "num" }, percent.format(s.conversion_from_previous)),
              el("td", { class: "num" }, number.format(s.dropoff)),
              el("td", { class: "num" }, s.median_ms_from_first == null ? "—" : duration(s.median_ms_from_first))));
          }
          return table;
        }

        function duration(ms) {
          if (ms < 1000) return ms + " ms";
          if (ms < 60000) return number.format(ms / 1000) + " s";
          if (ms < 3600000) return number.format(ms / 60000) + " min";
          return number.format(ms / 3600000) + " h";
        }

        // `scope=fleet` (answers over every instance, from ClickHouse) is offered when this instance forwards events.
        let fleet = null;
        function scopeField(params) {
          const select = el("select", { name: "scope" },
            el("option", { value: "local" }, "this instance"), el("option", { value: "fleet" }, "the fleet (ClickHouse)"));
          select.value = params.get("scope") === "fleet" ? "fleet" : "local";
          const label = el("label", { hidden: "" }, "Scope", select);
          const show = (on) => { if (on || select.value === "fleet") label.removeAttribute("hidden"); };
          if (fleet === null) {
            api("/health").then((h) => { fleet = !!h.events_forwarding; show(fleet); }).catch(() => {});
          } else {
            show(fleet);
          }
          return label;
        }

        // A form of text fields bound to the URL: `fields` is [name, label, default]; submitting puts them in the hash.
        function queryForm(name, fields, params) {
          const form = el("form", { class: "query", "aria-label": name });
          for (const [key, label, fallback] of fields) {
            const value = params.get(key) ?? fallback;
            const input = key === "from" || key === "to"
              ? el("input", { name: key, type: "datetime-local", value: localInput(Date.parse(value)) })
              : el("input", { name: key, value });
            form.append(el("label", {}, label, input));
          }
          if (name !== "series") form.append(scopeField(params));
          form.append(el("button", { type: "submit" }, "Show"));
          form.addEventListener("submit", (e) => {
            e.preventDefault();
            const next = new URLSearchParams();
            for (const [key, v] of new FormData(form)) {
              if (v === "" || (key === "scope" && v === "local")) continue;
              next.set(key, key === "from" || key === "to" ? utc(v) : v);
            }
            setHash(name, next);
          });
          return form;
        }

        function rangeDefaults(days) {
          const now = Date.now();
          return [new Date(now - days * 86400000).toISOString(), new Date(now).toISOString()];
        }

        // The parameters of a view: each field's value, from the URL or its default.
        function values(fields, params) {
          const q = new URLSearchParams();
          for (const [key, , fallback] of fields) {
            const v = params.get(key) ?? fallback;
            if (v !== "") q.set(key, v);
          }
          if (params.get("scope") === "fleet") q.set("scope", "fleet");
          return q;
        }

        // A view of one analytics endpoint (`/api/v1/<name>`): its form, then — once `required` is set — the answer,
        // or the API's error shown as it is (answer null).
        async function ask(params, name, title, fields, required, prompt) {
          const result = el("div", { id: "result" });
          view.append(el("h1", {}, title), queryForm(name, fields, params), result);
          if (!params.get(required)) { result.append(el("p", {}, prompt)); return { result, answer: null }; }
          try {
            return { result, answer: await api(`/api/v1/${name}?` + values(fields, params)) };
          } catch (e) {
            showError(result, e);
            return { result, answer: null };
          }
        }

        // Retention: the cohort table as a heat map, size then one cell per period with its rate.
        async function retention(params) {
          const [from, to] = rangeDefaults(28);
          const fields = [["cohort_event", "Cohort event", ""], ["return_event", "Return event", "any"],
            ["period", "Period (day, week)", "week"], ["periods", "Periods", "8"], ["from", "From", from], ["to", "To", to],
            ["breakdown", "Breakdown (property)", ""]];
          const { result, answer } = await ask(params, "retention", "Retention", fields, "cohort_event", "Pick a cohort event.");
          if (!answer) return;
          result.append(cohortTable(answer.cohorts || [], answer.period, "retention"));
          for (const [value, part] of Object.entries(answer.breakdown || {})) {
            result.append(el("h2", {}, params.get("breakdown") + " = " + value));
            result.append(cohortTable(part.cohorts || [], answer.period, "retention-" + value));
          }
        }

        function cohortTable(cohorts, period, id) {
          const periods = Math.max(0, ...cohorts.map((c) => c.rates.length));
          const head = el("tr", {}, el("th", { scope: "col" }, "cohort"), el("th", { scope: "col" }, "size"));
          for (let k = 0; k < periods; k++) head.append(el("th", { scope: "col" }, period + " " + k));
          const table = el("table", { id, class: "heat" }, head);
          const dates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });
          for (const c of cohorts) {
            const row = el("tr", { "data-cohort": c.start },
              el("th", { scope: "row" }, dates.format(new Date(c.start))),
              el("td", { class: "num", "data-size": c.size }, number.format(c.size)));
            c.rates.forEach((r, k) => {
              // The darker the cell, the more of the cohort came back (text stays readable on both ends).
              const shade = Math.round(235 - r * 150);
              row.append(el("td", { class: "num", "data-rate": r, "data-retained": c.retained[k],
                "aria-label": percent.format(r) + " (" + c.retained[k] + " users)" }, percent.format(r)));
              row.lastChild.style.background = `rgb(${shade}, ${shade + 8}, 255)`;
            });
            table.append(row);
          }
          return table;
        }

        // Experiment: variants with exposed, converted, rate and its 95 % interval as whiskers, uplift, p-value, and
        // a sentence.
        async function experiment(params) {
          const [from, to] = rangeDefaults(30);
          const fields = [["exposure_event", "Exposure event", "exposure"], ["variant_property", "Variant property", "variant"],
            ["goal_event", "Goal event", ""], ["window", "Window", "7d"], ["from", "From", from], ["to", "To", to],
            ["control", "Control (optional)", ""]];
          const { result, answer } = await ask(params, "experiment", "Experiment", fields, "goal_event", "Pick a goal event.");
          if (!answer) return;
          const variants = answer.variants || [];
          result.append(el("p", { id: "verdict" }, verdict(answer)));
          result.append(intervals(variants));
          const table = el("table", { id: "experiment" },
            el("tr", {}, ...["variant", "exposed", "converted", "rate", "95 % interval", "uplift", "p-value"].map((h) => el("th", { scope: "col" }, h))));
          for (const v of variants) {
            table.append(el("tr", { "data-variant": v.variant },
              el("td", {}, v.variant + (v.variant === answer.control ? " (control)" : "")),
              el("td", { class: "num", "data-exposed": v.exposed }, number.format(v.exposed)),
              el("td", { class: "num", "data-converted": v.converted }, number.format(v.converted)),
              el("td", { class: "num", "data-rate": v.rate }, percent.format(v.rate)),
              el("td", { class: "num" }, percent.format(v.ci95[0]) + " – " + percent.format(v.ci95[1])),
              el("td", { class: "num" }, v.uplift == null ? "—" : percent.format(v.uplift)),
              el("td", { class: "num", "data-p": v.p_value ?? "" }, v.p_value == null ? "—" : v.p_value.toPrecision(2))));
          }
          result.append(table, el("p", {}, "Users exposed to more than one variant, left out: " + answer.excluded_users));
        }

        function verdict(answer) {
          const control = (answer.variants || []).find((v) => v.variant === answer.control);
          const others = (answer.variants || []).filter((v) => v.variant !== answer.control && v.uplift != null);
          if (!control || others.length === 0) return "Not enough data to compare variants yet.";
          const best = others.reduce((a, b) => (b.uplift > a.uplift ? b : a));
          const how = best.uplift >= 0 ? "better" : "worse";
          const p = best.p_value == null ? "no p-value" : "p = " + best.p_value.toPrecision(2);
          return `${best.variant} converts ${percent.format(Math.abs(best.uplift))} ${how} than ${control.variant}; ${p}.`;
        }

        function intervals(variants) {
          const width = 640, row = 28, left = 90;
          const top = Math.min(1, Math.max(0.01, ...variants.map((v) => v.ci95[1])) * 1.1);
          const x = (r) => left + (width - left - 20) * r / top;
          const svg = el("svg:svg", { viewBox: `0 0 ${width} ${row * variants.length + 24}`, role: "img",
            "aria-label": "Conversion rates with 95 % intervals", width: "100%" });
          variants.forEach((v, i) => {
            const y = 14 + i * row;
            svg.append(el("svg:text", { x: 4, y: y + 4 }, v.variant));
            svg.append(el("svg:line", { x1: x(v.ci95[0]), x2: x(v.ci95[1]), y1: y, y2: y, class: "whisker" }));
            for (const end of v.ci95) svg.append(el("svg:line", { x1: x(end), x2: x(end), y1: y - 6, y2: y + 6, class: "whisker" }));
            svg.append(el("svg:circle", { cx: x(v.rate), cy: y, r: 5, class: "point" }));
          });
          return svg;
        }

        // Series: measurement, field, aggregate and tag filter (the metadata offered as you type), a line chart from
        // InfluxQL on /query.
        async function series(params) {
          const [from, to] = rangeDefaults(1);
          const fields = [["measurement", "Measurement", ""], ["field", "Field", ""], ["agg", "Aggregate", "mean"],
            ["where", "Tag filter (InfluxQL, e.g. host = 'a')", ""], ["group_by", "Group by tag", ""],
            ["from", "From", from], ["to", "To", to]];
          const form = queryForm("series", fields, params);
          const lists = { measurement: "measurements", field: "fields", group_by: "tags" };
          for (const [name, id] of Object.entries(lists)) {
            form.querySelector(`input[name="${name}"]`).setAttribute("list", id);
            form.append(el("datalist", { id }));
          }
          const agg = form.querySelector('input[name="agg"]');
          agg.setAttribute("list", "aggregates");
          const aggs = el("datalist", { id: "aggregates" });
          for (const a of ["mean", "median", "min", "max", "sum", "count", "first", "last", "spread", "stddev", "percentile(99)"])
            aggs.append(el("option", { value: a }));
          form.append(aggs);
          const result = el("div", { id: "result" });
          view.append(el("h1", {}, "Series"), form, result);
          const offer = (q, id, column = 0) => api("/query?q=" + encodeURIComponent(q)).then((r) => {
            const list = form.querySelector("#" + id);
            for (const s of (r.results?.[0]?.series || [])) for (const v of s.values || []) list.append(el("option", { value: v[column] }));
          }).catch(() => {});
          offer("SHOW MEASUREMENTS", "measurements");
          const m = params.get("measurement");
          if (m) { offer(`SHOW FIELD KEYS FROM ${ident(m)}`, "fields"); offer(`SHOW TAG KEYS FROM ${ident(m)}`, "tags"); }
          if (!m || !params.get("field")) { result.append(el("p", {}, "Pick a measurement and a field.")); return; }
          const p = values(fields, params);
          const fromMs = Date.parse(p.get("from")), toMs = Date.parse(p.get("to"));
          const step = Math.max(60, Math.ceil((toMs - fromMs) / 1000 / 200 / 60) * 60);
          const a = p.get("agg");
          const call = a.includes("(") ? a.replace("(", `(${ident(p.get("field"))}, `) : `${a}(${ident(p.get("field"))})`;
          const where = `time >= '${new Date(fromMs).toISOString()}' AND time < '${new Date(toMs).toISOString()}'` +
            (p.get("where") ? ` AND (${p.get("where")})` : "");
          const group = `GROUP BY time(${step}s)` + (p.get("group_by") ? `, ${ident(p.get("group_by"))}` : "") + " fill(none)";
          const q = `SELECT ${call} FROM ${ident(m)} WHERE ${where} ${group}`;
          result.append(el("p", {}, el("code", { id: "influxql" }, q)));
          let answer;
          try { answer = await api("/query?epoch=ms&q=" + encodeURIComponent(q)); } catch (e) { showError(result, e); return; }
          const r = answer.results?.[0] || {};
          if (r.error) { showError(result, new Error(r.error)); return; }
          const found = r.series || [];
          if (found.length === 0) { result.append(el("p", {}, "No points in this range.")); return; }
          result.append(lineChart(found, fromMs, toMs));
        }

        // An InfluxQL identifier, quoted.
        function ident(name) { return '"' + String(name).replaceAll("\\", "\\\\").replaceAll('"', '\\"') + '"'; }

        function lineChart(found, fromMs, toMs) {
          const width = 720, height = 260, left = 60, bottom = 24;
          const all = found.flatMap((s) => s.values.map((v) => v[1]).filter((v) => v != null));
          const lo = Math.min(...all), hi = Math.max(...all);
          const span = hi > lo ? hi - lo : Math.abs(hi) || 1;
          const x = (t) => left + (width - left - 10) * (t - fromMs) / Math.max(1, toMs - fromMs);
          const y = (v) => 8 + (height - bottom - 16) * (1 - (v - (hi > lo ? lo : lo - span / 2)) / span);
          const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", width: "100%",
            "aria-label": "Line chart of " + found.length + " series" });
          svg.append(el("svg:text", { x: 4, y: 16 }, number.format(hi)), el("svg:text", { x: 4, y: height - bottom }, number.format(lo)));
          const times = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "short" });
          svg.append(el("svg:text", { x: left, y: height - 4 }, times.format(new Date(fromMs))));
          svg.append(el("svg:text", { x: width - 150, y: height - 4 }, times.format(new Date(toMs))));
          const palette = ["#3a6ea5", "#c05a1c", "#2e8b57", "#8a4fbf", "#b03a48", "#4d7c8a"];
          found.forEach((s, i) => {
            const points = s.values.filter((v) => v[1] != null);
            const tags = Object.entries(s.tags || {}).map(([k, v]) => k + "=" + v).join(",");
            svg.append(el("svg:polyline", { class: "line", stroke: palette[i % palette.length], fill: "none", "stroke-width": 2,
              points: points.map((v) => x(v[0]) + "," + y(v[1])).join(" "),
              "data-series": tags, "data-values": points.map((v) => v[1]).join(",") }));
          });
          const legend = el("ul", { class: "legend" });
          found.forEach((s, i) => {
            legend.append(el("li", {}, Object.entries(s.tags || {}).map(([k, v]) => k + "=" + v).join(", ") || s.name));
            legend.lastChild.style.color = palette[i % palette.length];  // CSSOM: allowed by the page's CSP
          });
          return el("div", {}, svg, legend);
        }

        const views = { overview, funnel, retention, experiment, series };
        window.addEventListener("hashchange", route);
        route();
        """#
}
