//! A number's decimal digits, without `core::fmt`.
//!
//! `Display` of an integer goes through `Formatter::pad_integral`: a few hundred instructions
//! for a number. The per-message paths write several (the audit record's sizes and counts,
//! the log line's counts, the client's IPv4 address, the timestamps' fields), so they take
//! their digits from here.
//! Owns nothing else; pure.

/// Up to 20 digits (`u64::MAX`), kept on the stack.
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    /// The digits of `n`, as `n.to_string()` has them.
    pub fn of(mut n: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Decimal { digits, start };
            }
        }
    }

    /// The digits as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }

    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are stored.
        std::str::from_utf8(self.as_bytes()).unwrap_or("0")
    }
}

/// The last `out.len()` digits of `n`, zero-padded to fill `out`: the fixed-width fields of
/// a timestamp (`07`, `000120`).
pub fn write_padded(mut n: u64, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::{Decimal, write_padded};

    #[test]
    fn padded_digits_are_those_format_pads() {
        for width in 1..=6 {
            let limit = 10u64.pow(width as u32);
            for n in [0, 1, 7, 10, 59, 999, 12_345, 999_999]
                .into_iter()
                .filter(|n| *n < limit)
            {
                let mut out = vec![b'x'; width];
                write_padded(n, &mut out);
                assert_eq!(
                    String::from_utf8(out).expect("digits"),
                    format!("{n:0width$}")
                );
            }
        }
    }

    #[test]
    fn digits_are_those_to_string_writes() {
        let mut n = 1u64;
        let mut checked = 0;
        for value in (0..=1000).chain([u64::from(u32::MAX), u64::MAX - 1, u64::MAX]) {
            assert_eq!(Decimal::of(value).as_str(), value.to_string());
            checked += 1;
        }
        while let Some(next) = n.checked_mul(10) {
            for v in [n - 1, n, n + 1] {
                assert_eq!(Decimal::of(v).as_str(), v.to_string());
                checked += 1;
            }
            n = next;
        }
        assert!(checked > 1050);
    }
}
