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
//! hash and no copy), and a bound on memory. The bound counts what is
//! really kept: each text with its map entry, and each template's own
//! estimate of the objects it keeps alive (a document's objects take 20 to
//! 40 times its text). Everything is dropped when the bound is reached;
//! madsci's working set is far below it.

use std::collections::HashMap;
use std::sync::Arc;

/// Shorter texts parse about as fast as they copy.
const MIN_TEXT: usize = 16;
/// Longer texts are rare and would crowd out the rest.
const MAX_TEXT: usize = 64 * 1024;
/// Estimated bytes kept, texts and objects together.
pub const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;
/// A map entry besides its text: the slot (key box, slot tag, template
/// pointer), the hash table's spare room and the allocator's header.
const ENTRY: usize = 64;

/// What a kept value costs in memory, estimated.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl<T: Weigh> Weigh for Arc<T> {
    fn weight(&self) -> usize {
        (**self).weight()
    }
}

/// Whether a text is worth remembering: a JSON object or array of a
/// middling size.
pub fn worth_keeping(text: &[u8]) -> bool {
    (MIN_TEXT..=MAX_TEXT).contains(&text.len()) && matches!(text[0], b'{' | b'[')
}

enum Memory<T> {
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
    map: HashMap<Box<[u8]>, Memory<T>>,
    weight: usize,
    budget: usize,
}

impl<T: Clone + Weigh> TextMemo<T> {
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
            Some(Memory::Kept(t)) => (Lookup::Hit(t.clone()), None),
            Some(Memory::Seen) => (Lookup::Second, None),
            None => {
                let cost = ENTRY + text.len();
                let dropped = (self.weight + cost > self.budget).then(|| self.clear());
                self.weight += cost;
                self.map.insert(text.into(), Memory::Seen);
                (Lookup::First, dropped)
            }
        }
    }

    /// A template for a text seen before. Nothing is kept for a text
    /// that was dropped since (it starts over as unseen), nor past the
    /// budget (the next new text makes room): the template is handed back.
    pub fn keep(&mut self, text: &[u8], template: T) -> Option<T> {
        let cost = template.weight();
        match self.map.get_mut(text) {
            Some(slot @ Memory::Seen) if self.weight + cost <= self.budget => {
                *slot = Memory::Kept(template);
                self.weight += cost;
                None
            }
            _ => Some(template),
        }
    }

    /// Estimated bytes kept, and how many texts are known.
    pub fn usage(&self) -> (usize, usize) {
        (self.weight, self.map.len())
    }

    /// Forget everything; the templates are handed back to be dropped
    /// outside the caller's lock.
    pub fn clear(&mut self) -> Vec<T> {
        self.weight = 0;
        std::mem::take(&mut self.map)
            .into_values()
            .filter_map(|slot| match slot {
                Memory::Kept(t) => Some(t),
                Memory::Seen => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template that weighs its value.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct W(usize);

    impl Weigh for W {
        fn weight(&self) -> usize {
            self.0
        }
    }

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
        assert_eq!(memo.keep(DOC, W(7)), None);
        assert!(matches!(memo.look_up(DOC).0, Lookup::Hit(W(7))));
        assert!(matches!(
            memo.look_up(b"[1, 2, 3, 4, 5, 6, 7, 8]").0,
            Lookup::First
        ));
        assert_eq!(memo.map.len(), 2);
    }

    #[test]
    fn nothing_is_kept_for_an_unseen_text() {
        let mut memo = TextMemo::new(DEFAULT_BUDGET);
        assert_eq!(memo.keep(DOC, W(1)), Some(W(1)));
        assert!(matches!(memo.look_up(DOC).0, Lookup::First));
    }

    #[test]
    fn everything_is_dropped_and_handed_back_at_the_budget() {
        let entry = ENTRY + DOC.len();
        let mut memo = TextMemo::new(2 * entry + 99);
        memo.look_up(DOC);
        memo.look_up(DOC);
        assert_eq!(memo.keep(DOC, W(100)), None);
        assert_eq!(memo.usage(), (entry + 100, 1));
        let other = br#"{"name": "node_2", "tags": ["b", 2]}"#;
        let (lookup, dropped) = memo.look_up(other);
        assert!(matches!(lookup, Lookup::First));
        assert_eq!(dropped, Some(vec![W(100)]));
        assert_eq!(memo.usage(), (entry, 1));
        assert!(matches!(memo.look_up(DOC).0, Lookup::First));
        assert!(matches!(memo.look_up(other).0, Lookup::Second));
    }

    #[test]
    fn a_template_past_the_budget_is_handed_back() {
        let mut memo = TextMemo::new(ENTRY + DOC.len() + 10);
        memo.look_up(DOC);
        memo.look_up(DOC);
        assert_eq!(memo.keep(DOC, W(11)), Some(W(11)));
        assert!(matches!(memo.look_up(DOC).0, Lookup::Second));
        assert_eq!(memo.keep(DOC, W(10)), None);
        assert!(matches!(memo.look_up(DOC).0, Lookup::Hit(W(10))));
    }

    #[test]
    fn clearing_hands_back_the_templates() {
        let mut memo = TextMemo::new(DEFAULT_BUDGET);
        memo.look_up(DOC);
        memo.look_up(DOC);
        memo.keep(DOC, W(5));
        assert_eq!(memo.clear(), vec![W(5)]);
        assert_eq!(memo.usage(), (0, 0));
    }
}
