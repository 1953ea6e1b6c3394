//! Decoding peer payloads with a bound on nesting.
//!
//! postcard decodes recursively, one call deeper per level of nesting, and some types in
//! the payloads nest without bound: a [`MapCommand::Tagged`](crate::MapCommand::Tagged)
//! holds a map change, and openraft's storage errors (inside a [`RaftReply`](crate::RaftReply))
//! carry an `AnyError` whose source is another `AnyError`. A payload of a few bytes a level
//! (300 KB is 100,000 levels, well within a frame) overflowed the decoding thread's stack,
//! which aborts the whole process. [`from_bytes`] counts the levels as it goes and refuses
//! a payload nested deeper than [`PAYLOAD_NESTING_MAX`]: legitimate messages nest about a dozen
//! deep.
//!
//! The bound wraps the decoder (every option, sequence, map, enum and newtype entered is a
//! level), so it covers every type in a payload, openraft's included, without changing the
//! encoding.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Most levels of nesting a peer payload may have.
pub const PAYLOAD_NESTING_MAX: usize = 64;

/// Decodes a `T` from `bytes` as `postcard::from_bytes` does (trailing bytes are ignored),
/// refusing more than [`PAYLOAD_NESTING_MAX`] levels of nesting.
pub(crate) fn from_bytes<'a, T: de::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, postcard::Error> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    T::deserialize(Bounded {
        inner: &mut de,
        left: PAYLOAD_NESTING_MAX,
    })
}

/// One level deeper, or an error past the bound.
fn deeper<E: de::Error>(left: usize) -> Result<usize, E> {
    left.checked_sub(1).ok_or_else(|| {
        E::custom(format_args!(
            "nested more than {PAYLOAD_NESTING_MAX} levels deep"
        ))
    })
}

/// A deserializer with `left` levels of nesting still allowed.
struct Bounded<D> {
    inner: D,
    left: usize,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method($($arg,)* Guard { visitor, left: self.left })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(), deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor whose compound values (and theirs) are bounded.
struct Guard<V> {
    visitor: V,
    left: usize,
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.visitor.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Guard<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let left = deeper(self.left)?;
        self.visitor.visit_some(Bounded { inner: d, left })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let left = deeper(self.left)?;
        self.visitor
            .visit_newtype_struct(Bounded { inner: d, left })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left)?;
        self.visitor.visit_seq(Seq { inner: seq, left })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left)?;
        self.visitor.visit_map(Map { inner: map, left })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let left = deeper(self.left)?;
        self.visitor.visit_enum(Enum { inner: data, left })
    }
}

/// A seed whose value is decoded within the bound.
struct Seed<S> {
    seed: S,
    left: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Bounded {
            inner: d,
            left: self.left,
        })
    }
}

struct Seq<A> {
    inner: A,
    left: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let left = self.left;
        self.inner.next_element_seed(Seed { seed, left })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct Map<A> {
    inner: A,
    left: usize,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let left = self.left;
        self.inner.next_key_seed(Seed { seed, left })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let left = self.left;
        self.inner.next_value_seed(Seed { seed, left })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct Enum<A> {
    inner: A,
    left: usize,
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<A> {
    type Error = A::Error;
    type Variant = Variant<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let left = self.left;
        let (value, variant) = self.inner.variant_seed(Seed { seed, left })?;
        Ok((
            value,
            Variant {
                inner: variant,
                left,
            },
        ))
    }
}

struct Variant<A> {
    inner: A,
    left: usize,
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let left = self.left;
        self.inner.newtype_variant_seed(Seed { seed, left })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let left = self.left;
        self.inner.tuple_variant(len, Guard { visitor, left })
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let left = self.left;
        self.inner.struct_variant(fields, Guard { visitor, left })
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// A list that nests without bound.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum List {
        Nil,
        Cons(u8, Box<List>),
    }

    fn list(depth: usize) -> List {
        (0..depth).fold(List::Nil, |tail, i| List::Cons(i as u8, Box::new(tail)))
    }

    #[test]
    fn decodes_like_postcard_within_the_bound() {
        for depth in [0, 1, 10, PAYLOAD_NESTING_MAX / 2 - 1] {
            let bytes = postcard::to_stdvec(&list(depth)).expect("encodes");
            let plain: List = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(from_bytes::<List>(&bytes).expect("decodes bounded"), plain);
        }
        let mixed = (Some(vec![(1u8, "a".to_owned())]), [3u16; 4], Some(Some(())));
        let bytes = postcard::to_stdvec(&mixed).expect("encodes");
        assert_eq!(
            from_bytes::<(Option<Vec<(u8, String)>>, [u16; 4], Option<Option<()>>)>(&bytes)
                .expect("decodes"),
            mixed
        );
    }

    #[test]
    fn refuses_deeper_nesting_without_recursing_through_it() {
        // Each `Cons` is an enum and a tuple variant: two levels, two bytes. 200,000 levels
        // would overflow any thread's stack if followed.
        let mut bytes = Vec::new();
        for _ in 0..200_000 {
            bytes.extend_from_slice(&[1, 7]);
        }
        bytes.push(0);
        let refused = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || from_bytes::<List>(&bytes).is_err())
            .expect("spawns")
            .join()
            .expect("no overflow");
        assert!(refused);
        let just_over = postcard::to_stdvec(&list(PAYLOAD_NESTING_MAX)).expect("encodes");
        assert!(from_bytes::<List>(&just_over).is_err());
    }
}
