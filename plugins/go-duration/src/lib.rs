//! Go-style duration strings ("10s", "1m30s", "500ms", "1.5s", "2h"), the
//! syntax Consul's service definitions and Registrator's labels use,
//! converted to the whole milliseconds the WIT `check-definition` carries.
//! One parser for every built-in source, so a duration means the same in a
//! container label and in a service file.

/// Why a text is not a duration this crate can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// Not Go's syntax at all ("ten", "10x", "-5s").
    NotADuration,
    /// A number without a unit where one is needed ("1m30", "1.5").
    MissingUnit,
    /// More milliseconds than a u32 holds (about 49 days).
    TooLong,
}

/// Unit names with their length in nanoseconds. A unit is compared with the
/// whole run of characters between a number and the next one, so the order
/// here does not matter.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // MICRO SIGN, as Go accepts
    ("\u{3bc}s", 1_000), // GREEK SMALL LETTER MU, as Go accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Fraction digits past this many are dropped: they are below a nanosecond
/// for every unit, and keeping them would only risk overflow.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Parses `text` as a Go duration and returns it in milliseconds.
///
/// Accepts what Go's `time.ParseDuration` accepts except a sign (a negative
/// interval or timeout means nothing here). A remainder below one
/// millisecond is rounded up, so that "500us" does not become 0, which the
/// WIT reads as "the default" or "never".
///
/// Each caller words the error for its own users.
pub fn parse_ms(text: &str) -> Result<u32, DurationError> {
    if text == "0" {
        return Ok(0);
    }
    if text.is_empty() {
        return Err(DurationError::NotADuration);
    }
    let mut rest = text;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        // The number: digits, optionally a '.' and more digits, at least one
        // digit in all ("5s", "1.5s", ".5s" and "5.s" are all Go durations).
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::NotADuration);
        }
        // The unit: every character up to the next digit or '.'.
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit);
        }
        let Some(&(_, unit_ns)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::NotADuration);
        };

        let whole = if int_digits.is_empty() {
            0
        } else {
            // More than 38 digits do not fit in a u128; such a value is far
            // too long anyway.
            int_digits
                .parse::<u128>()
                .map_err(|_| DurationError::TooLong)?
        };
        let mut frac_ns: u128 = 0;
        if !frac_digits.is_empty() {
            let kept = &frac_digits[..frac_digits.len().min(MAX_FRACTION_DIGITS as usize)];
            let numerator = kept
                .parse::<u128>()
                .map_err(|_| DurationError::NotADuration)?;
            let scale = 10u128.pow(kept.len() as u32);
            frac_ns = numerator * unit_ns / scale;
        }
        total_ns = whole
            .checked_mul(unit_ns)
            .and_then(|n| n.checked_add(frac_ns))
            .and_then(|n| n.checked_add(total_ns))
            .ok_or(DurationError::TooLong)?;
        rest = after_unit;
    }
    let ms = total_ns.div_ceil(1_000_000);
    u32::try_from(ms).map_err(|_| DurationError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::{parse_ms, DurationError};

    #[test]
    fn go_style_durations() {
        for (text, ms) in [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("2h", 7_200_000),
            ("1h2m3s4ms", 3_723_004),
            (".5s", 500),
            ("5.s", 5_000),
            ("0", 0),
            ("0s", 0),
            ("1.0000000000000000000000001s", 1_000),
            ("500us", 1),
            ("1500\u{b5}s", 2),
            ("1ns", 1),
            ("1193h", 4_294_800_000),
        ] {
            assert_eq!(parse_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn errors_say_which() {
        for bad in [
            "", "ten", "s", "10x", "10 s", " 10s", "-5s", "+5s", ".s", "5sm", ".",
        ] {
            assert_eq!(parse_ms(bad), Err(DurationError::NotADuration), "{bad:?}");
        }
        for bad in ["10", "1m30", "1.5", "1..5s"] {
            assert_eq!(parse_ms(bad), Err(DurationError::MissingUnit), "{bad:?}");
        }
        for long in ["1194h", "99999999999999999999999999999999999999999h"] {
            assert_eq!(parse_ms(long), Err(DurationError::TooLong), "{long:?}");
        }
    }
}
