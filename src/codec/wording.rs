//! `json`'s decoder messages where they depend on the interpreter's version.
//!
//! A comma right before a closer (`[1,]`, `{"a": 1 , }`) is the one case so
//! far: CPython 3.13 names it and points at the comma (gh-113149); up to 3.12
//! the scanner reports what it wanted instead of the closer, at the closer.
//! The version comes from the running interpreter, so the same rule serves
//! every wheel (and an abi3 one, should there be one).

/// Which container a trailing comma was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Array,
    Object,
}

/// The message and byte offset `json` gives for a closer found right after a
/// comma (whitespace between them allowed), on Python `major.minor`.
pub fn trailing_comma(
    version: (u8, u8),
    container: Container,
    comma_at: usize,
    closer_at: usize,
) -> (&'static str, usize) {
    if version >= (3, 13) {
        let msg = match container {
            Container::Array => "Illegal trailing comma before end of array",
            Container::Object => "Illegal trailing comma before end of object",
        };
        (msg, comma_at)
    } else {
        let msg = match container {
            Container::Array => "Expecting value",
            Container::Object => "Expecting property name enclosed in double quotes",
        };
        (msg, closer_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What each interpreter's json reports for `[1 , ]` (comma at 3, closer
    // at 5) and `{"a":1,}` (comma at 6, closer at 7), seen on 3.10.13, 3.11.7,
    // 3.12.1 and 3.13.0.
    #[test]
    fn before_3_13_the_closer_is_what_was_unexpected() {
        for version in [(3, 10), (3, 11), (3, 12)] {
            assert_eq!(
                trailing_comma(version, Container::Array, 3, 5),
                ("Expecting value", 5)
            );
            assert_eq!(
                trailing_comma(version, Container::Object, 6, 7),
                ("Expecting property name enclosed in double quotes", 7)
            );
        }
    }

    #[test]
    fn from_3_13_the_comma_is_named_and_pointed_at() {
        for version in [(3, 13), (3, 14), (4, 0)] {
            assert_eq!(
                trailing_comma(version, Container::Array, 3, 5),
                ("Illegal trailing comma before end of array", 3)
            );
            assert_eq!(
                trailing_comma(version, Container::Object, 6, 7),
                ("Illegal trailing comma before end of object", 6)
            );
        }
    }
}
