//! Message framing rules shared by the request encoder and the response parser:
//! `Content-Length` values and `Transfer-Encoding` lists, parsed strictly (the replica
//! is untrusted input as far as request smuggling and response splitting go).

/// A `Content-Length` that is not one unsigned decimal number, or header lines (or
/// list members) that disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidLength;

/// The length all `Content-Length` values agree on (`None` without any), RFC 9110
/// §8.6: each value may be a comma-separated list of identical decimal numbers.
pub(crate) fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, InvalidLength> {
    let mut length = None;
    for value in values {
        for member in value.split(|b| *b == b',') {
            let n = digits(member.trim_ascii()).ok_or(InvalidLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(InvalidLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A decimal number of at least one digit and nothing else, without overflow.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// What a `Transfer-Encoding` list says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `chunked` is the final coding (and the only `chunked`).
    Chunked,
    /// Codings without `chunked`: a response body then runs until the connection closes.
    Other,
}

/// `chunked` anywhere but last, or an empty coding, is an error (RFC 9112 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidCoding;

/// Reads every `Transfer-Encoding` value in order.
pub(crate) fn transfer_coding<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Coding, InvalidCoding> {
    let mut chunked_last = false;
    for value in values {
        for coding in value.split(|b| *b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() || chunked_last {
                // An empty member, or anything after `chunked` (chunked twice included).
                return Err(InvalidCoding);
            }
            chunked_last = coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(if chunked_last {
        Coding::Chunked
    } else {
        Coding::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(values: &[&str]) -> Result<Option<u64>, InvalidLength> {
        content_length(values.iter().map(|v| v.as_bytes()))
    }

    fn te(values: &[&str]) -> Result<Coding, InvalidCoding> {
        transfer_coding(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn content_lengths() {
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&["0"]), Ok(Some(0)));
        assert_eq!(cl(&["42"]), Ok(Some(42)));
        assert_eq!(cl(&[" 42 "]), Ok(Some(42)));
        assert_eq!(cl(&["42", "42"]), Ok(Some(42)), "repeated, equal");
        assert_eq!(cl(&["42, 42"]), Ok(Some(42)), "list of equal values");
        assert_eq!(cl(&["18446744073709551615"]), Ok(Some(u64::MAX)));
        for bad in [
            &["42", "43"][..],
            &["42, 43"],
            &[""],
            &["4 2"],
            &["+42"],
            &["-1"],
            &["0x10"],
            &["42,"],
            &["18446744073709551616"],
            &["1e3"],
        ] {
            assert_eq!(cl(bad), Err(InvalidLength), "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings() {
        assert_eq!(te(&["chunked"]), Ok(Coding::Chunked));
        assert_eq!(te(&["Chunked"]), Ok(Coding::Chunked));
        assert_eq!(te(&["gzip, chunked"]), Ok(Coding::Chunked));
        assert_eq!(te(&["gzip", "chunked"]), Ok(Coding::Chunked));
        assert_eq!(te(&["gzip"]), Ok(Coding::Other));
        for bad in [
            &["chunked, gzip"][..],
            &["chunked", "gzip"],
            &["chunked, chunked"],
            &["chunked", "chunked"],
            &[""],
            &["gzip,,chunked"],
        ] {
            assert_eq!(te(bad), Err(InvalidCoding), "{bad:?}");
        }
    }
}
