//! The log line: tracing-subscriber's default text format (`Full`) and its
//! flattened JSON, byte for byte, written without most of their cost.
//!
//! Theirs send every piece of a line (the time, the level, each field name
//! and `=`, each value) through `core::fmt`, with ANSI styles that are empty
//! when colours are off; the JSON one goes through serde, a few bytes per
//! call. A `/api/auth/me` request's INFO line cost about 12,000
//! instructions that way (a quarter of the request), here under 5,000. What
//! is rare stays theirs, so it cannot come out differently: colours on a
//! terminal, events from the `log` crate, error values, and JSON lines
//! logged inside a span (their `span` and `spans` objects). The tests below
//! hold both formats to theirs.

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::{MakeVisitor, RecordFields, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{self, DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::{self, FormatTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The text line: `TIME LEVEL span{fields}: target: message field=value...`.
#[derive(Default)]
pub struct Text {
    full: Format<Full, time::SystemTime>,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || event.is_log() {
            return self.full.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        write_timestamp(&mut writer)?;
        writer.write_char(' ')?;
        writer.write_str(padded_level(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The text format's fields, `message name=value ...`: `DefaultFields`
/// without its `write!` per field of empty styles.
pub struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> TextVisitor<'a> {
        TextVisitor {
            out: Staged::new(writer),
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields for `TextFields`.
pub struct TextVisitor<'a> {
    out: Staged<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Whether to leave the field out: after a failed write, and for the
    /// `log.*` fields of `log` records, whose metadata is shown instead.
    fn skips(&self, field: &Field) -> bool {
        self.result.is_err() || field.name().starts_with("log.")
    }

    fn ansi(&self) -> bool {
        self.out.writer.has_ansi_escapes()
    }

    /// Hands one field to `DefaultVisitor`, for what only it should write.
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if let Err(e) = self.out.flush() {
            self.result = Err(e);
            return;
        }
        let mut visitor = DefaultVisitor::new(self.out.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// Whether this visitor writes `field` itself: not when it is skipped,
    /// nor on a terminal, where `theirs` has `DefaultVisitor` write it.
    fn writes(&mut self, field: &Field, theirs: impl FnOnce(&mut DefaultVisitor<'_>)) -> bool {
        if self.skips(field) {
            return false;
        }
        if self.ansi() {
            self.delegate(theirs);
            return false;
        }
        true
    }

    /// The space between fields (none before the first).
    fn separate(&mut self) {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.out.write_char(' ');
        }
    }

    /// ` name=`.
    fn start(&mut self, field: &Field) {
        self.separate();
        let name = field.name();
        self.result = self
            .out
            .write_str(name.strip_prefix("r#").unwrap_or(name))
            .and_then(|()| self.out.write_char('='));
    }

    fn write_integer(&mut self, field: &Field, value: impl itoa::Integer) {
        self.start(field);
        self.result = self.out.write_str(itoa::Buffer::new().format(value));
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.skips(field) {
            return;
        }
        if self.ansi() || field.name() == "message" {
            return self.delegate(|v| v.record_str(field, value));
        }
        self.start(field);
        self.result = write_debug_str(&mut self.out, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.writes(field, |v| v.record_u64(field, value)) {
            self.write_integer(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.writes(field, |v| v.record_i64(field, value)) {
            self.write_integer(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.writes(field, |v| v.record_bool(field, value)) {
            return;
        }
        self.start(field);
        self.result = self.out.write_str(if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.skips(field) {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.writes(field, |v| v.record_debug(field, value)) {
            return;
        }
        if field.name() == "message" {
            self.separate();
            self.result = if self.out.writer.sanitizes_ansi_escapes() {
                write!(Sanitized(&mut self.out), "{value:?}")
            } else {
                write!(self.out, "{value:?}")
            };
            return;
        }
        self.start(field);
        self.result = write!(self.out, "{value:?}");
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(mut self) -> fmt::Result {
        self.result.and_then(|()| self.out.flush())
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        // Whatever is written there comes after what is staged.
        if let Err(e) = self.out.flush() {
            self.result = Err(e);
        }
        &mut self.out.writer
    }
}

/// Bytes gathered before they are written on in one piece.
const STAGED: usize = 256;

/// Gathers small writes and passes them on together: fewer calls through
/// the line's `dyn Write`, and a span's fields go into their `String` at
/// once instead of growing it piece by piece.
struct Staged<'a> {
    writer: Writer<'a>,
    buf: String,
}

impl<'a> Staged<'a> {
    fn new(writer: Writer<'a>) -> Self {
        Staged {
            writer,
            buf: String::with_capacity(STAGED),
        }
    }

    fn flush(&mut self) -> fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.writer.write_str(&self.buf);
        self.buf.clear();
        result
    }
}

impl Write for Staged<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.buf.len() + s.len() > STAGED {
            self.flush()?;
            if s.len() > STAGED {
                return self.writer.write_str(s);
            }
        }
        self.buf.push_str(s);
        Ok(())
    }

    fn write_char(&mut self, c: char) -> fmt::Result {
        if self.buf.len() + c.len_utf8() > STAGED {
            self.flush()?;
        }
        self.buf.push(c);
        Ok(())
    }
}

/// The flattened JSON line: `{"timestamp":…,"level":…,fields…,"target":…}`.
pub struct Json {
    json: Format<format::Json, time::SystemTime>,
}

impl Default for Json {
    fn default() -> Self {
        Json {
            json: Format::default().json().flatten_event(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The same test as theirs for writing the span objects.
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        if in_span || event.is_log() {
            return self.json.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        let mut out = Staged::new(writer);
        out.write_str(r#"{"timestamp":""#)?;
        write_timestamp(&mut out)?;
        out.write_str(r#"","level":""#)?;
        out.write_str(padded_level(meta.level()).trim_start())?;
        out.write_char('"')?;
        let mut visitor = JsonVisitor {
            out: &mut out,
            comma: true,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        out.write_str(r#","target":"#)?;
        write_json_str(&mut out, meta.target())?;
        out.write_str("}\n")?;
        out.flush()
    }
}

/// The JSON format's span fields, one JSON object, holding what
/// tracing-subscriber's `JsonFields` holds, without building a map of
/// `serde_json::Value`s for every span. Their JSON formatter, which writes
/// the lines logged inside a span, parses it back into a map (keys in
/// order, the last of a repeated key kept), so writing the fields as they
/// come (and appending those recorded later) comes out the same.
pub struct JsonFields;

impl<'a> FormatFields<'a> for JsonFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'a>, fields: R) -> fmt::Result {
        let mut out = Staged::new(writer);
        out.write_char('{')?;
        write_span_fields(&mut out, false, fields)?;
        out.write_char('}')?;
        out.flush()
    }

    fn add_fields(
        &self,
        current: &'a mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        if current.fields.pop() != Some('}') {
            // Nothing yet (or not an object, which cannot be appended to).
            current.fields.clear();
            return self.format_fields(current.as_writer(), fields);
        }
        let comma = current.fields.len() > 1;
        let mut out = Staged::new(current.as_writer());
        write_span_fields(&mut out, comma, fields)?;
        out.write_char('}')?;
        out.flush()
    }
}

fn write_span_fields(out: &mut Staged<'_>, comma: bool, fields: impl RecordFields) -> fmt::Result {
    let mut visitor = SpanJsonVisitor(JsonVisitor {
        out,
        comma,
        result: Ok(()),
    });
    fields.record(&mut visitor);
    visitor.0.result
}

/// Writes each field as `"name":value`, with the values tracing-serde's map
/// visitor gives an event's fields: numbers and booleans as themselves,
/// everything else as a string.
struct JsonVisitor<'o, 'a> {
    out: &'o mut Staged<'a>,
    /// Whether a field was written before (by this visitor or earlier).
    comma: bool,
    result: fmt::Result,
}

impl JsonVisitor<'_, '_> {
    fn start(&mut self, name: &str) -> bool {
        if self.result.is_err() {
            return false;
        }
        if self.comma {
            self.result = self.out.write_char(',');
        }
        self.comma = true;
        self.result = self
            .result
            .and_then(|()| write_json_str(self.out, name))
            .and_then(|()| self.out.write_char(':'));
        self.result.is_ok()
    }

    fn write_debug(&mut self, name: &str, value: &dyn fmt::Debug) {
        if self.start(name) {
            self.result = self
                .out
                .write_char('"')
                .and_then(|()| write!(JsonEscaped(&mut *self.out), "{value:?}"))
                .and_then(|()| self.out.write_char('"'));
        }
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.start(field.name()) {
            self.result = write_json_str(self.out, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field.name()) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field.name()) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field.name()) {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.start(field.name()) {
            // serde_json's own float format (non-finite numbers are null).
            self.result = serde_json::to_string(&value)
                .map_err(|_| fmt::Error)
                .and_then(|s| self.out.write_str(&s));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_debug(field.name(), value);
    }
}

/// A span's fields as `JsonFields` keeps them: as an event's, but bytes as
/// an array of numbers, and a `Debug` value under its name without `r#`,
/// with the `log.*` fields of `log` records left out.
struct SpanJsonVisitor<'o, 'a>(JsonVisitor<'o, 'a>);

impl Visit for SpanJsonVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.record_str(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_f64(field, value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        let visitor = &mut self.0;
        if visitor.start(field.name()) {
            visitor.result = serde_json::to_string(value)
                .map_err(|_| fmt::Error)
                .and_then(|s| visitor.out.write_str(&s));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if !name.starts_with("log.") {
            self.0
                .write_debug(name.strip_prefix("r#").unwrap_or(name), value);
        }
    }
}

/// The level as the text format shows it: five wide, right-aligned.
fn padded_level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// Now in UTC as `2026-12-01T20:41:52.038669Z`, like tracing-subscriber's
/// `SystemTime` timer, which writes the years it does not expect here
/// (before 1970, after 9999).
fn write_timestamp(writer: &mut impl Write) -> fmt::Result {
    let Some(line) = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| utc_timestamp(since.as_secs(), since.subsec_micros()))
    else {
        let mut text = String::new();
        time::SystemTime.format_time(&mut Writer::new(&mut text))?;
        return writer.write_str(&text);
    };
    writer.write_str(std::str::from_utf8(&line).expect("digits and ASCII punctuation"))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for a time in years 1970 to 9999.
fn utc_timestamp(secs: u64, micros: u32) -> Option<[u8; 27]> {
    // 9999-12-31T23:59:59Z
    if secs > 253_402_300_799 {
        return None;
    }
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, day_secs / 3600);
    put(14, 2, day_secs / 60 % 60);
    put(17, 2, day_secs % 60);
    put(20, 6, u64::from(micros));
    Some(out)
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days that are not negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A string as `{:?}` writes it, quoted and escaped; copied as it is when
/// there is nothing to escape.
fn write_debug_str(writer: &mut impl Write, s: &str) -> fmt::Result {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        writer.write_char('"')?;
        writer.write_str(s)?;
        writer.write_char('"')
    } else {
        write!(writer, "{s:?}")
    }
}

/// A string as serde_json writes it.
fn write_json_str(writer: &mut impl Write, s: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(writer).write_str(s)?;
    writer.write_char('"')
}

/// Escapes what passes through as serde_json escapes a string's contents:
/// `"`, `\` and control characters below U+0020. Nothing else.
struct JsonEscaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escaped = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            // Only ASCII bytes end a run: the slices fall on char boundaries.
            self.0.write_str(&s[plain..i])?;
            if escaped.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escaped)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// Escapes terminal control characters in a message as tracing-subscriber
/// does, so a logged value cannot drive the terminal that shows the log.
struct Sanitized<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Sanitized<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // ESC, BEL, BS, FF and DEL, or the lead byte of U+0080..=U+00BF.
        let plain = |b: &u8| !matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2);
        if s.bytes().all(|b| plain(&b)) {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

    use tracing::{Level, info_span};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Lines written by a subscriber under test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        /// What was written, each timestamp replaced by `TIME`.
        fn text(&self) -> String {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            let (mut out, mut rest) = (String::new(), text.as_str());
            while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
                out.push_str(&rest[..at]);
                rest = &rest[at..];
                let shape = b"0000-00-00T00:00:00.000000Z";
                let stamp = rest.len() >= shape.len()
                    && shape.iter().zip(rest.bytes()).all(|(s, b)| {
                        if *s == b'0' {
                            b.is_ascii_digit()
                        } else {
                            *s == b
                        }
                    });
                let skip = if stamp { shape.len() } else { 1 };
                out.push_str(if stamp { "TIME" } else { &rest[..1] });
                rest = &rest[skip..];
            }
            out + rest
        }
    }

    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Every kind of field, message and span context we can think of.
    fn log_everything() {
        tracing::info!("kaggleingest listening on http://127.0.0.1:{}", 8080);
        tracing::info!(
            method = "GET",
            route = "/api/auth/me",
            status = 200u16,
            micros = 1234u64,
            client = %IpAddr::from([127, 0, 0, 1]),
            request_id = "0b2bac531e207eb1",
            "request"
        );
        tracing::debug!(client = %"::1".parse::<IpAddr>().unwrap(), "v6");
        tracing::warn!(
            quoted = "a \"b\" \\ c\n\t\u{1b}[31m é \u{9b} \u{301} \u{7f} '",
            "escapes in a value"
        );
        tracing::info!("a message with \u{1b}[31m, \u{7}, \u{9b} and \"quotes\"");
        tracing::info!(message = "a message given as a str \u{1b}");
        tracing::info!(
            negative = -5i64,
            yes = true,
            no = false,
            ratio = 0.5f64,
            "scalars"
        );
        tracing::info!(
            nan = f64::NAN,
            inf = f64::INFINITY,
            whole = 2.0f64,
            "floats"
        );
        tracing::info!(big = u128::MAX, small = i128::MIN, "wide integers");
        tracing::info!(bytes = &b"ab\x00\xff"[..], "bytes");
        tracing::info!(list = ?vec![1, 2], text = %"shown \"as is\"", "debug and display");
        tracing::info!(empty = "", r#type = "raw", "names");
        tracing::info!(answer = 42);
        let plain = io::Error::other("plain failure");
        tracing::error!(
            error = &plain as &(dyn std::error::Error + 'static),
            "an error"
        );
        let chained = Outer(io::Error::other("the cause"));
        tracing::error!(
            error = &chained as &(dyn std::error::Error + 'static),
            "a chain"
        );
        tracing::info!(target: "some::other", x = 1, "another target");
        tracing::trace!("trace");
        let span = tracing::error_span!("request", request_id = %"abc-1");
        span.in_scope(|| {
            tracing::error!(status = 500u16, error = %"sqlite: no such table", "request failed");
            info_span!("inner", n = 2, s = "x").in_scope(|| tracing::info!("nested"));
            info_span!("bare").in_scope(|| tracing::info!("in a span without fields"));
            tracing::info!(parent: None, "a root event inside a span");
        });
        tracing::info!(parent: &span, "an explicit parent");
        span.record("request_id", "changed");
        span.in_scope(|| tracing::warn!("after a record"));
        let kinds = info_span!(
            "kinds",
            r#type = "t",
            r#dbg = ?1,
            bytes = &b"ab"[..],
            f = 1.5,
            nan = f64::NAN,
            yes = true,
            neg = -1i64,
            wide = u128::MAX,
            text = "\"quoted\"\n",
            later = tracing::field::Empty,
        );
        kinds.in_scope(|| tracing::info!("in a span of every kind"));
        kinds.record("later", 7u64);
        kinds.record("neg", 5u64);
        kinds.in_scope(|| tracing::info!("after two records"));
        let empty = info_span!("empty", late = tracing::field::Empty);
        empty.record("late", "now");
        empty.in_scope(|| tracing::info!("recorded into an empty span"));
    }

    fn text_pair(ansi: bool) -> (String, String) {
        let (ours, theirs) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(ours.clone())
            .with_ansi(ansi)
            .fmt_fields(TextFields)
            .event_format(Text::default())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(theirs.clone())
            .with_ansi(ansi)
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        (ours.text(), theirs.text())
    }

    #[test]
    fn text_lines_are_tracing_subscribers_byte_for_byte() {
        let (ours, theirs) = text_pair(false);
        assert!(theirs.lines().count() >= 20, "{theirs}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn text_lines_with_colours_are_tracing_subscribers() {
        let (ours, theirs) = text_pair(true);
        assert!(theirs.contains('\u{1b}'), "{theirs}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn json_lines_are_tracing_subscribers_byte_for_byte() {
        let (ours, theirs) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(ours.clone())
            .json()
            .flatten_event(true)
            .fmt_fields(JsonFields)
            .event_format(Json::default())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(theirs.clone())
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);

        let (ours, theirs) = (ours.text(), theirs.text());
        assert!(theirs.lines().count() >= 20, "{theirs}");
        for recorded in [r#""bytes":[97,98]"#, r#""later":7"#, r#""late":"now""#] {
            assert!(theirs.contains(recorded), "{recorded} in {theirs}");
        }
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_staged_value_longer_than_the_stage_is_written_whole() {
        let (ours, theirs) = (Lines::default(), Lines::default());
        let long = "x".repeat(STAGED * 3 + 7);
        let log = || {
            tracing::info!(a = "short", long = long.as_str(), b = 1, "m");
            tracing::info_span!("s", long = long.as_str()).in_scope(|| tracing::info!("in"));
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .with_ansi(false)
            .fmt_fields(TextFields)
            .event_format(Text::default())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(theirs.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, log);

        assert_eq!(ours.text(), theirs.text());
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let stamp = |secs, micros| {
            String::from_utf8(utc_timestamp(secs, micros).unwrap().to_vec()).unwrap()
        };
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(stamp(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(stamp(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(stamp(1_709_164_800, 0), "2024-02-29T00:00:00.000000Z");
        assert_eq!(stamp(1_796_157_712, 38_669), "2026-12-01T20:41:52.038669Z");
        assert_eq!(stamp(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        assert!(utc_timestamp(253_402_300_800, 0).is_none());
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_escapes_them() {
        let every: String = (0u32..0x300).filter_map(char::from_u32).collect();
        for s in [every.as_str(), "", "plain", "\u{1b}[0m\"\\", "end\\"] {
            let mut ours = String::new();
            write_json_str(&mut Writer::new(&mut ours), s).unwrap();
            assert_eq!(ours, serde_json::to_string(s).unwrap());
        }
    }
}
