//! Decoded values kept by their JSON text, so that reading text seen before
//! copies a template instead of parsing it again.
//!
//! Why: madsci's managers read the same stored documents (nodes, workflows,
//! status) over and over between writes, and parsing is most of what a
//! read costs on our side once the reply has arrived. Copying a decoded
//! template rebuilds only the containers.
//!
//! The rules here are free of Python: what is worth keeping, when a text
//! earns a template (its second sighting, so that text read once costs a
//! hash and no copy), and a bound on memory (everything is dropped when
//! the bound is reached; madsci's working set is far below it).

use std::collections::HashMap;

/// Shorter texts parse about as fast as they copy.
const MIN_TEXT: usize = 16;
/// Longer texts are rare and would crowd out the rest.
const MAX_TEXT: usize = 64 * 1024;
/// A rough bound on memory: text bytes kept, counted three times for a
/// template (text, the map's key, and the decoded objects).
pub const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;

/// Whether a text is worth remembering: a JSON object or array of a
/// middling size.
pub fn worth_keeping(text: &[u8]) -> bool {
    (MIN_TEXT..=MAX_TEXT).contains(&text.len()) && matches!(text[0], b'{' | b'[')
}

enum Slot<T> {
    /// Seen once: no template yet.
    Seen,
    Kept(T),
}

pub enum Lookup<T> {
    /// A template of this text.
    Hit(T),
    /// Seen once before: decode and `keep` a template.
    Second,
    /// Never seen: decode; it is now marked as seen.
    First,
}

pub struct TextMemo<T> {
    map: HashMap<Box<[u8]>, Slot<T>>,
    weight: usize,
    budget: usize,
}

impl<T: Clone> TextMemo<T> {
    pub fn new(budget: usize) -> Self {
        TextMemo {
            map: HashMap::new(),
            weight: 0,
            budget,
        }
    }

    /// What is known of `text`; a first sighting is recorded. When the
    /// budget is reached everything is dropped and handed back, so that
    /// the caller can let go of the templates outside its lock.
    pub fn look_up(&mut self, text: &[u8]) -> (Lookup<T>, Option<Vec<T>>) {
        match self.map.get(text) {
            Some(Slot::Kept(t)) => (Lookup::Hit(t.clone()), None),
            Some(Slot::Seen) => (Lookup::Second, None),
            None => {
                let dropped = self.make_room(text.len());
                self.map.insert(text.into(), Slot::Seen);
                (Lookup::First, dropped)
            }
        }
    }

    /// A template for a text seen before. Nothing is kept for a text
    /// that was dropped since (it starts over as unseen): the template is
    /// handed back.
    pub fn keep(&mut self, text: &[u8], template: T) -> Option<T> {
        match self.map.get_mut(text) {
            Some(slot @ Slot::Seen) => {
                *slot = Slot::Kept(template);
                self.weight += 2 * text.len();
                None
            }
            _ => Some(template),
        }
    }

    fn make_room(&mut self, len: usize) -> Option<Vec<T>> {
        self.weight += len;
        if self.weight <= self.budget {
            return None;
        }
        self.weight = len;
        let dropped = std::mem::take(&mut self.map)
            .into_values()
            .filter_map(|slot| match slot {
                Slot::Kept(t) => Some(t),
                Slot::Seen => None,
            })
            .collect();
        Some(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"{"name": "node_1", "tags": ["a", 1]}"#;

    #[test]
    fn keeps_objects_and_arrays_of_middling_size() {
        assert!(worth_keeping(DOC));
        assert!(worth_keeping(br#"["a", "b", "c", "d", "e"]"#));
        assert!(!worth_keeping(b"{}"));
        assert!(!worth_keeping(br#""a string that is long enough""#));
        assert!(!worth_keeping(b"12345678901234567890"));
        let mut big = b"[".to_vec();
        big.resize(MAX_TEXT + 1, b' ');
        assert!(!worth_keeping(&big));
    }

    #[test]
    fn a_template_is_kept_on_the_second_sighting() {
        let mut memo = TextMemo::new(DEFAULT_BUDGET);
        assert!(matches!(memo.look_up(DOC).0, Lookup::First));
        assert!(matches!(memo.look_up(DOC).0, Lookup::Second));
        assert_eq!(memo.keep(DOC, 7), None);
        assert!(matches!(memo.look_up(DOC).0, Lookup::Hit(7)));
        assert!(matches!(
            memo.look_up(b"[1, 2, 3, 4, 5, 6, 7, 8]").0,
            Lookup::First
        ));
        assert_eq!(memo.map.len(), 2);
    }

    #[test]
    fn nothing_is_kept_for_an_unseen_text() {
        let mut memo = TextMemo::new(DEFAULT_BUDGET);
        assert_eq!(memo.keep(DOC, 1), Some(1));
        assert!(matches!(memo.look_up(DOC).0, Lookup::First));
    }

    #[test]
    fn everything_is_dropped_and_handed_back_at_the_budget() {
        let mut memo = TextMemo::new(3 * DOC.len());
        memo.look_up(DOC);
        memo.look_up(DOC);
        assert_eq!(memo.keep(DOC, 1), None);
        let other = br#"{"name": "node_2", "tags": ["b", 2]}"#;
        let (lookup, dropped) = memo.look_up(other);
        assert!(matches!(lookup, Lookup::First));
        assert_eq!(dropped, Some(vec![1]));
        assert_eq!(memo.map.len(), 1);
        assert!(matches!(memo.look_up(DOC).0, Lookup::First));
        assert!(matches!(memo.look_up(other).0, Lookup::Second));
    }
}
