//! The rules a command's values must meet before it is submitted, and their
//! limits: text and names, dates, times, counts, ids, phone numbers and
//! tenants. Pure functions over values, so that the handlers, the fuzz
//! targets and the offline commands apply the very same checks; it knows
//! nothing of HTTP, JSON, the writer or the log (`http::error` renders an
//! [`Invalid`] as a problem document).

use chrono::{NaiveDate, NaiveTime, Timelike};
use uuid::Uuid;

use crate::core::Text;

/// A name's characters, at most: clinic, doctor, business, campaign, and a
/// provider's id, a community's owner and plan.
pub const NAME_CHARS_MAX: usize = 128;
pub const PATIENT_CHARS_MAX: usize = 200;
/// An external calendar's booking id or correlation id.
pub const REF_CHARS_MAX: usize = 255;
pub const REASON_CHARS_MAX: usize = 1000;
pub const COMMUNITY_NAME_CHARS_MAX: usize = 200;
pub const SLOTS_PER_DAY_MAX: u32 = 1000;
pub const SLOT_MINUTES_MAX: u32 = 480;
/// A hold's `ttl_secs`: from 30 s to an hour, 300 s when not given.
pub const HOLD_TTL_SECS: std::ops::RangeInclusive<u32> = 30..=3600;
pub const HOLD_TTL_SECS_DEFAULT: u32 = 300;
/// A phone number's characters, at most, as written (before it is parsed).
pub const PHONE_NUMBER_CHARS_MAX: usize = 64;
/// The form of a tenant's name, as [`valid_tenant`] checks it.
pub const TENANT_FORM: &str = "[a-z0-9][a-z0-9-]{0,62}";
/// A tenant's name's bytes, at most.
pub const TENANT_BYTES_MAX: usize = 63;

/// A value a command may not carry: the field that holds it and what is wrong
/// with it. `http::error` answers each with the problem API.md names for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A field outside its rules: 400 `invalid_request`.
    #[error("{field}: {detail}")]
    Field { field: &'static str, detail: String },
    /// Not a phone number, or not a valid one: 422 `invalid_phone_number`.
    #[error("{field}: {text:?} is not a valid phone number")]
    PhoneNumber { field: &'static str, text: String },
}

impl Invalid {
    pub fn field(field: &'static str, detail: impl Into<String>) -> Invalid {
        Invalid::Field { field, detail: detail.into() }
    }
}

/// A command's request body, checked into the values its command is built
/// from. Each body has this one `check`, the only place its rules are applied:
/// its handler calls it, and so does the fuzz target
/// (`http::extract::check_command_body`), so what the fuzzer learns is true
/// of the handler.
pub trait Check {
    /// The request's values, checked and normalized (a phone number in E.164).
    type Checked;

    fn check(self) -> Result<Self::Checked, Invalid>;
}

/// A text field: 1..=`chars_max` characters, none of them control characters.
pub fn check_text(field: &'static str, value: &str, chars_max: usize) -> Result<(), Invalid> {
    let chars = value.chars().count();
    if chars == 0 || chars > chars_max {
        return Err(Invalid::field(field, format!("must be 1 to {chars_max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::field(field, "must not contain control characters"));
    }
    if value.chars().any(is_bidi_control) {
        return Err(Invalid::field(field, "must not contain bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069)"));
    }
    if value.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(Invalid::field(field, "must contain a visible character"));
    }
    Ok(())
}

/// [`check_text`], for an optional field: absent is fine.
pub fn check_optional_text(field: &'static str, value: Option<&str>, chars_max: usize) -> Result<(), Invalid> {
    value.map_or(Ok(()), |value| check_text(field, value, chars_max))
}

/// A name that is also a path segment (clinic, doctor, business, campaign): a
/// text field that is not `.` or `..` and holds no `/` or `\\`, so that a
/// name sent in a body can always be addressed in a path, and a path (`%2F`
/// decodes to `/`) never reads as another route or a relative reference.
pub fn check_name(field: &'static str, value: &str) -> Result<(), Invalid> {
    check_text(field, value, NAME_CHARS_MAX)?;
    if value == "." || value == ".." || value.contains(['/', '\\']) {
        return Err(Invalid::field(field, "must not be `.` or `..`, nor contain `/` or `\\`"));
    }
    Ok(())
}

/// Characters that reorder the text around them: a name holding one can show
/// as something else (a right-to-left override turns "Asha" into "ahsA").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that take no space of their own: a name made only of them reads as empty.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// A count from 1 to `max`.
pub fn check_count(field: &'static str, value: u32, max: u32) -> Result<(), Invalid> {
    if !(1..=max).contains(&value) {
        return Err(Invalid::field(field, format!("must be 1 to {max}")));
    }
    Ok(())
}

/// A number within `range`.
pub fn check_within(field: &'static str, value: u32, range: std::ops::RangeInclusive<u32>) -> Result<(), Invalid> {
    if !range.contains(&value) {
        return Err(Invalid::field(field, format!("must be {} to {}", range.start(), range.end())));
    }
    Ok(())
}

/// A `patient_id`: chosen by the caller, `[A-Za-z0-9._-]{1,64}`, never itself personal data.
pub fn check_patient_id(field: &'static str, value: &str) -> Result<(), Invalid> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty() || value.len() > 64 || !value.chars().all(allowed) {
        return Err(Invalid::field(field, format!("{value:?} is not 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'")));
    }
    Ok(())
}

/// `YYYY-MM-DD`, strictly.
pub fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, Invalid> {
    // Four digits of year, 0001 to 9999: chrono alone takes "0000", "-001" and "+001".
    let four_digit_year = value.len() == 10 && value.as_bytes()[..4].iter().all(u8::is_ascii_digit) && &value[..4] != "0000";
    let date = four_digit_year.then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()).flatten();
    date.ok_or_else(|| Invalid::field(field, format!("{value:?} is not a date (YYYY-MM-DD)")))
}

/// `HH:MM`, strictly, as minutes after midnight.
pub fn parse_minute_of_day(field: &'static str, value: &str) -> Result<u32, Invalid> {
    let time = (value.len() == 5).then(|| NaiveTime::parse_from_str(value, "%H:%M").ok()).flatten();
    let time = time.ok_or_else(|| Invalid::field(field, format!("{value:?} is not a time (HH:MM)")))?;
    Ok(time.hour() * 60 + time.minute())
}

/// A UUID, in any of the forms `Uuid::try_parse` takes.
pub fn parse_uuid(field: &'static str, value: &str) -> Result<Uuid, Invalid> {
    Uuid::try_parse(value).map_err(|_| Invalid::field(field, format!("{value:?} is not a UUID")))
}

/// Parses `text` as a phone number (with `default_region` for numbers written
/// without a country code, "US" when none is given) and writes it in E.164: the
/// one form numbers are compared in.
pub fn e164(field: &'static str, text: &str, default_region: Option<&str>) -> Result<Text, Invalid> {
    let region = default_region.unwrap_or("US");
    let region: phonenumber::country::Id =
        region.parse().map_err(|_| Invalid::field("default_region", format!("{region:?} is not an ISO 3166 alpha-2 region")))?;
    let invalid = || Invalid::PhoneNumber { field, text: text.to_owned() };
    if text.chars().count() > PHONE_NUMBER_CHARS_MAX {
        return Err(invalid());
    }
    let number = phonenumber::parse(Some(region), text).map_err(|_| invalid())?;
    if !number.is_valid() {
        return Err(invalid());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string().into())
}

/// A tenant's name: [`TENANT_FORM`], lowercase ASCII letters, digits and `-`
/// (not first), since it is a path segment and a directory name in cluster mode.
pub fn valid_tenant(tenant: &str) -> bool {
    let bytes = tenant.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=TENANT_BYTES_MAX).contains(&bytes.len()) && allowed(&bytes[0]) && bytes[1..].iter().all(|b| allowed(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_visible_and_within_its_length() {
        for good in ["Asha", " Asha ", "a\u{200B}b", &"é".repeat(10)] {
            assert_eq!(check_text("patient", good, 10), Ok(()), "{good:?}");
        }
        for (bad, detail) in [
            ("", "must be 1 to 10 characters"),
            (&"é".repeat(11), "must be 1 to 10 characters"),
            ("As\nha", "must not contain control characters"),
            ("\u{202E}Asha", "must not contain bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069)"),
            (" \u{200B}\u{FEFF}", "must contain a visible character"),
        ] {
            assert_eq!(check_text("patient", bad, 10), Err(Invalid::field("patient", detail)), "{bad:?}");
        }
        assert_eq!(check_optional_text("reason", None, 10), Ok(()));
        assert!(check_optional_text("reason", Some(""), 10).is_err());
    }

    #[test]
    fn names_are_path_segments() {
        for good in ["Dr. Rao", "...", "a.b"] {
            assert_eq!(check_name("doctor", good), Ok(()), "{good:?}");
        }
        for bad in [".", "..", "a/b", "a\\b", ""] {
            assert!(matches!(check_name("doctor", bad), Err(Invalid::Field { field: "doctor", .. })), "{bad:?}");
        }
        assert!(check_name("doctor", &"a".repeat(NAME_CHARS_MAX)).is_ok());
        assert!(check_name("doctor", &"a".repeat(NAME_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn dates_times_counts_and_ids_are_strict() {
        assert_eq!(parse_date("date", "2026-03-02"), Ok(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()));
        for bad in ["0000-01-01", "+001-01-01", "2026-3-02", "2026-02-30", "2026-03-02T00:00"] {
            assert_eq!(parse_date("date", bad), Err(Invalid::field("date", format!("{bad:?} is not a date (YYYY-MM-DD)"))));
        }
        assert_eq!(parse_minute_of_day("first_slot", "09:30"), Ok(570));
        for bad in ["9:30", "24:00", "09:30:00", "0930"] {
            assert!(parse_minute_of_day("first_slot", bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_count("slots_per_day", 1000, SLOTS_PER_DAY_MAX), Ok(()));
        for bad in [0, 1001] {
            assert_eq!(check_count("slots_per_day", bad, SLOTS_PER_DAY_MAX), Err(Invalid::field("slots_per_day", "must be 1 to 1000")));
        }
        assert!(parse_uuid("booking_id", "0190f5a2-7c1e-7b2a-9d3e-4f5a6b7c8d9e").is_ok());
        assert_eq!(parse_uuid("booking_id", "nope"), Err(Invalid::field("booking_id", "\"nope\" is not a UUID")));
    }

    #[test]
    fn phone_numbers_are_written_in_e164() {
        for (text, region) in
            [("+1 (424) 324-2113", None), ("424-324-2113", None), ("(424) 324 2113", Some("US")), ("+14243242113", Some("IN"))]
        {
            assert_eq!(e164("to", text, region).as_deref(), Ok("+14243242113"), "{text:?} {region:?}");
        }
        assert_eq!(e164("to", "020 7946 0958", Some("GB")).as_deref(), Ok("+442079460958"));
        for bad in ["", "12", "not a number", "+1 555 0100", &format!("+1 424 324 2113{}", " ".repeat(PHONE_NUMBER_CHARS_MAX))] {
            assert_eq!(e164("to", bad, None), Err(Invalid::PhoneNumber { field: "to", text: bad.to_owned() }), "{bad:?}");
        }
        assert_eq!(
            e164("to", "+14243242113", Some("XX")),
            Err(Invalid::field("default_region", "\"XX\" is not an ISO 3166 alpha-2 region"))
        );
    }

    #[test]
    fn tenant_names() {
        for good in ["kloqo", "a", "0-clinic", &"a".repeat(TENANT_BYTES_MAX)] {
            assert!(valid_tenant(good), "{good}");
        }
        for bad in ["", "-a", "Kloqo", "a_b", &"a".repeat(TENANT_BYTES_MAX + 1), "a/b"] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }
}
