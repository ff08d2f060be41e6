//! Go-style duration strings ("10s", "1m30s", "500ms", "1.5s", "2h"), the
//! syntax Consul's service definitions use, converted to the whole
//! milliseconds the WIT `check-definition` carries.

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
/// The error is the complete message, e.g. `"ten" is not a duration`.
pub fn parse_ms(text: &str) -> Result<u32, String> {
    let not_a_duration =
        || format!("{text:?} is not a duration (use e.g. \"10s\", \"1m30s\", \"500ms\")");
    if text == "0" {
        return Ok(0);
    }
    if text.is_empty() {
        return Err(not_a_duration());
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
            return Err(not_a_duration());
        }
        // The unit: every character up to the next digit or '.'.
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        let Some(&(_, unit_ns)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(not_a_duration());
        };

        let whole = if int_digits.is_empty() {
            0
        } else {
            // More than 38 digits do not fit in a u128; such a value is far
            // too long anyway.
            int_digits.parse::<u128>().map_err(|_| too_long(text))?
        };
        let mut frac_ns: u128 = 0;
        if !frac_digits.is_empty() {
            let kept = &frac_digits[..frac_digits.len().min(MAX_FRACTION_DIGITS as usize)];
            let numerator = kept.parse::<u128>().map_err(|_| not_a_duration())?;
            let scale = 10u128.pow(kept.len() as u32);
            frac_ns = numerator * unit_ns / scale;
        }
        total_ns = whole
            .checked_mul(unit_ns)
            .and_then(|n| n.checked_add(frac_ns))
            .and_then(|n| n.checked_add(total_ns))
            .ok_or_else(|| too_long(text))?;
        rest = after_unit;
    }
    let ms = total_ns.div_ceil(1_000_000);
    u32::try_from(ms).map_err(|_| too_long(text))
}

fn too_long(text: &str) -> String {
    format!(
        "{text:?} is too long (at most {}ms, about 49 days)",
        u32::MAX
    )
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn go_style_durations() {
        assert_eq!(parse_ms("10s"), Ok(10_000));
        assert_eq!(parse_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("1.5s"), Ok(1_500));
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_ms(".5s"), Ok(500));
        assert_eq!(parse_ms("5.s"), Ok(5_000));
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("0s"), Ok(0));
        assert_eq!(parse_ms("1.0000000000000000000000001s"), Ok(1_000));
    }

    #[test]
    fn sub_millisecond_rounds_up() {
        assert_eq!(parse_ms("500us"), Ok(1));
        assert_eq!(parse_ms("1500\u{b5}s"), Ok(2));
        assert_eq!(parse_ms("1ns"), Ok(1));
        assert_eq!(parse_ms("2000000ns"), Ok(2));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "", "ten", "10", "s", "10x", "10 s", " 10s", "-5s", "+5s", ".s", "1..5s", "5sm",
        ] {
            let err = parse_ms(bad).expect_err(bad);
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_what_does_not_fit() {
        assert_eq!(parse_ms("1193h"), Ok(4_294_800_000));
        let err = parse_ms("1194h").expect_err("too long");
        assert!(err.contains("too long"), "{err}");
        let err = parse_ms("99999999999999999999999999999999999999999h").expect_err("too long");
        assert!(err.contains("too long"), "{err}");
    }
}
