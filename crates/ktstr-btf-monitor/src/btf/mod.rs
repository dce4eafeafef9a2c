//! BTF: the kernel's own type information, parsed into an indexed, owned type table.
//!
//! [`Btf::parse`] reads raw BTF (`/sys/kernel/btf/vmlinux`), [`Btf::from_elf`] the `.BTF`
//! section of a vmlinux ELF. Every offset, count and string in the input is bounds-checked;
//! malformed input gives a [`BtfError`], never a panic. [`resolve()`] turns a member path
//! such as `scx.nr_running` into a [`Field`] (offset, size, bitfield position).

mod elf;
#[cfg(test)]
pub(crate) mod kernel_tests;
mod parse;
mod resolve;
#[cfg(test)]
pub(crate) mod testutil;

pub use resolve::{resolve, Field};

use std::path::PathBuf;

/// A BTF type id; 0 is `void`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u32);

/// The kind of a BTF type, numbered as in `include/uapi/linux/btf.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Type id 0.
    Void,
    /// `BTF_KIND_INT`.
    Int,
    /// `BTF_KIND_PTR`.
    Ptr,
    /// `BTF_KIND_ARRAY`.
    Array,
    /// `BTF_KIND_STRUCT`.
    Struct,
    /// `BTF_KIND_UNION`.
    Union,
    /// `BTF_KIND_ENUM`.
    Enum,
    /// `BTF_KIND_FWD`.
    Fwd,
    /// `BTF_KIND_TYPEDEF`.
    Typedef,
    /// `BTF_KIND_VOLATILE`.
    Volatile,
    /// `BTF_KIND_CONST`.
    Const,
    /// `BTF_KIND_RESTRICT`.
    Restrict,
    /// `BTF_KIND_FUNC`.
    Func,
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto,
    /// `BTF_KIND_VAR`.
    Var,
    /// `BTF_KIND_DATASEC`.
    Datasec,
    /// `BTF_KIND_FLOAT`.
    Float,
    /// `BTF_KIND_DECL_TAG`.
    DeclTag,
    /// `BTF_KIND_TYPE_TAG`.
    TypeTag,
    /// `BTF_KIND_ENUM64`.
    Enum64,
}

/// A struct or union member; `bit_offset` counts from the start of the enclosing type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset of the name in the string table (0: anonymous).
    pub name_off: u32,
    /// The member's type.
    pub ty: TypeId,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Width of a bitfield in bits; 0 when the member is not a bitfield.
    pub bitfield_size: u8,
}

/// One enumerator of an ENUM or ENUM64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enumerator {
    /// Offset of the name in the string table.
    pub name_off: u32,
    /// The value, sign-extended when the enum is signed.
    pub value: i64,
}

/// One parameter of a FUNC_PROTO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Offset of the name in the string table (0: unnamed).
    pub name_off: u32,
    /// The parameter's type (0 for a trailing `...`).
    pub ty: TypeId,
}

/// One variable of a DATASEC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarSecInfo {
    /// The VAR type.
    pub ty: TypeId,
    /// Offset within the section.
    pub offset: u32,
    /// Size of the variable in bytes.
    pub size: u32,
}

/// What a type is, with the data its kind carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeBody {
    /// `void` (type id 0).
    Void,
    /// An integer: `encoding` holds `BTF_INT_SIGNED` (1), `CHAR` (2), `BOOL` (4).
    Int {
        /// Size in bytes.
        size: u32,
        /// Encoding bits.
        encoding: u8,
        /// Bit offset of the value within its storage (legacy bitfield encoding).
        offset: u8,
        /// Number of value bits.
        bits: u8,
    },
    /// A pointer to `target`.
    Ptr {
        /// Pointee type.
        target: TypeId,
    },
    /// An array of `len` elements of `elem`.
    Array {
        /// Element type.
        elem: TypeId,
        /// Index type.
        index: TypeId,
        /// Number of elements.
        len: u32,
    },
    /// A struct of `size` bytes.
    Struct {
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// A union of `size` bytes.
    Union {
        /// Size in bytes.
        size: u32,
        /// Members in declaration order.
        members: Vec<Member>,
    },
    /// A 32-bit-valued enum (ENUM) or a 64-bit one (ENUM64).
    Enum {
        /// Size in bytes.
        size: u32,
        /// Whether the values are signed.
        signed: bool,
        /// True for `BTF_KIND_ENUM64`.
        is_64: bool,
        /// The enumerators.
        values: Vec<Enumerator>,
    },
    /// A forward declaration.
    Fwd {
        /// True for `union x;`, false for `struct x;`.
        is_union: bool,
    },
    /// A typedef of `target`.
    Typedef {
        /// Aliased type.
        target: TypeId,
    },
    /// `volatile target`.
    Volatile {
        /// Qualified type.
        target: TypeId,
    },
    /// `const target`.
    Const {
        /// Qualified type.
        target: TypeId,
    },
    /// `restrict target`.
    Restrict {
        /// Qualified type.
        target: TypeId,
    },
    /// A type tag (`__attribute__((btf_type_tag))`) on `target`.
    TypeTag {
        /// Tagged type.
        target: TypeId,
    },
    /// A function.
    Func {
        /// Its FUNC_PROTO.
        proto: TypeId,
        /// Linkage: 0 static, 1 global, 2 extern.
        linkage: u16,
    },
    /// A function prototype.
    FuncProto {
        /// Return type.
        ret: TypeId,
        /// Parameters.
        params: Vec<Param>,
    },
    /// A variable.
    Var {
        /// Its type.
        ty: TypeId,
        /// Linkage: 0 static, 1 global, 2 extern.
        linkage: u32,
    },
    /// A data section.
    Datasec {
        /// Size in bytes.
        size: u32,
        /// Variables in the section.
        vars: Vec<VarSecInfo>,
    },
    /// A floating-point type.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// A declaration tag on `target` (`component_idx` -1: the whole declaration).
    DeclTag {
        /// Tagged type.
        target: TypeId,
        /// Member or parameter index, or -1.
        component_idx: i32,
    },
}

/// One BTF type: a name (offset into the string table) and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// Offset of the name in the string table (0: anonymous).
    pub name_off: u32,
    /// The kind-specific data.
    pub body: TypeBody,
}

impl Type {
    /// The kind of this type.
    pub fn kind(&self) -> Kind {
        match &self.body {
            TypeBody::Void => Kind::Void,
            TypeBody::Int { .. } => Kind::Int,
            TypeBody::Ptr { .. } => Kind::Ptr,
            TypeBody::Array { .. } => Kind::Array,
            TypeBody::Struct { .. } => Kind::Struct,
            TypeBody::Union { .. } => Kind::Union,
            TypeBody::Enum { is_64: false, .. } => Kind::Enum,
            TypeBody::Enum { is_64: true, .. } => Kind::Enum64,
            TypeBody::Fwd { .. } => Kind::Fwd,
            TypeBody::Typedef { .. } => Kind::Typedef,
            TypeBody::Volatile { .. } => Kind::Volatile,
            TypeBody::Const { .. } => Kind::Const,
            TypeBody::Restrict { .. } => Kind::Restrict,
            TypeBody::TypeTag { .. } => Kind::TypeTag,
            TypeBody::Func { .. } => Kind::Func,
            TypeBody::FuncProto { .. } => Kind::FuncProto,
            TypeBody::Var { .. } => Kind::Var,
            TypeBody::Datasec { .. } => Kind::Datasec,
            TypeBody::Float { .. } => Kind::Float,
            TypeBody::DeclTag { .. } => Kind::DeclTag,
        }
    }

    /// The members of a struct or union; empty for every other kind.
    pub fn members(&self) -> &[Member] {
        match &self.body {
            TypeBody::Struct { members, .. } | TypeBody::Union { members, .. } => members,
            _ => &[],
        }
    }
}

/// Errors from parsing BTF and resolving member paths.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// The input ended before a structure that had to be there.
    #[error("BTF truncated: {what} needs bytes {start}..{end} of {len}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// Bytes available.
        len: usize,
    },
    /// The first two bytes are not the BTF magic 0xeB9F in either byte order.
    #[error("not BTF: magic is {magic:#06x}, expected 0xeb9f")]
    BadMagic {
        /// The bytes found, read as little-endian.
        magic: u16,
    },
    /// A BTF version other than 1.
    #[error("unsupported BTF version {version}")]
    BadVersion {
        /// The version found.
        version: u8,
    },
    /// The header length is below the 24-byte minimum.
    #[error("BTF header length {hdr_len} is below 24")]
    BadHeader {
        /// The header length found.
        hdr_len: u32,
    },
    /// The string section is not valid UTF-8.
    #[error("BTF string section is not UTF-8")]
    StringsNotUtf8,
    /// A name offset points outside the string section or into a character.
    #[error("type {type_id}: name offset {offset} is outside the string section of {len} bytes")]
    BadStringOffset {
        /// The type carrying the name.
        type_id: u32,
        /// The offset.
        offset: u32,
        /// Length of the string section.
        len: usize,
    },
    /// A kind number this parser does not know.
    #[error("type {type_id}: unknown BTF kind {kind}")]
    UnknownKind {
        /// The type id being parsed.
        type_id: u32,
        /// The kind number.
        kind: u32,
    },
    /// A type refers to a type id past the last type.
    #[error("type {type_id}: refers to type {target}, but there are only {count} types")]
    BadTypeRef {
        /// The referring type.
        type_id: u32,
        /// The id it refers to.
        target: u32,
        /// Number of types (including void).
        count: usize,
    },
    /// The ELF file could not be read or parsed.
    #[error("cannot parse ELF {path}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What object reported.
        #[source]
        source: object::read::Error,
    },
    /// The ELF file could not be opened.
    #[error("cannot open {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The ELF file has no `.BTF` section.
    #[error("{path} has no .BTF section")]
    NoBtfSection {
        /// The file.
        path: PathBuf,
    },
    /// No struct or union of this name.
    #[error("no struct or union named `{name}` in BTF")]
    TypeNotFound {
        /// The name looked for.
        name: String,
    },
    /// A path step named a member the struct does not have.
    #[error("`{member}` is not a member of `{in_type}` (path `{path}`)")]
    MemberNotFound {
        /// The missing member.
        member: String,
        /// The struct or union it was looked for in.
        in_type: String,
        /// The whole path being resolved.
        path: String,
    },
    /// A path step went into a type that has no members.
    #[error("cannot look up `{member}` in `{in_type}`, a {kind:?} (path `{path}`)")]
    NotComposite {
        /// The member looked for.
        member: String,
        /// The type it was looked for in.
        in_type: String,
        /// That type's kind.
        kind: Kind,
        /// The whole path being resolved.
        path: String,
    },
    /// `[i]` on a type that is not an array.
    #[error("`{member}` is a {kind:?}, not an array (path `{path}`)")]
    NotArray {
        /// The member indexed.
        member: String,
        /// Its kind.
        kind: Kind,
        /// The whole path being resolved.
        path: String,
    },
    /// `[i]` past the array's end.
    #[error("index {index} is past the end of `{member}` ({len} elements, path `{path}`)")]
    IndexOutOfBounds {
        /// The member indexed.
        member: String,
        /// The index.
        index: u64,
        /// The array length.
        len: u32,
        /// The whole path being resolved.
        path: String,
    },
    /// The path does not parse (empty step, bad `[..]`).
    #[error("malformed member path `{path}`: {reason}")]
    BadPath {
        /// The path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A type's size could not be computed (a cycle, a FWD, a function).
    #[error("type {type_id} has no size ({reason})")]
    NoSize {
        /// The type.
        type_id: u32,
        /// Why.
        reason: &'static str,
    },
    /// An offset overflowed 32 bits while resolving.
    #[error("offset overflow while resolving `{path}`")]
    Overflow {
        /// The whole path being resolved.
        path: String,
    },
}

/// Parsed BTF: every type, the string table, and a name index.
#[derive(Debug)]
pub struct Btf {
    /// Types indexed by id; entry 0 is void.
    types: Vec<Type>,
    /// The string section (validated UTF-8).
    strings: String,
    /// `(name_off, id)` for every named type, sorted by name.
    by_name: Vec<(u32, TypeId)>,
}

/// Longest chain of typedefs/modifiers followed before giving up (guards against cycles).
const MAX_CHAIN: usize = 64;

impl Btf {
    /// Number of types, including void (id 0).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// True when there is no type besides void.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The type with this id.
    pub fn get(&self, id: TypeId) -> Option<&Type> {
        self.types.get(id.0 as usize)
    }

    /// Iterates over `(id, type)` for every type, void first.
    pub fn types(&self) -> impl Iterator<Item = (TypeId, &Type)> {
        (0u32..).zip(self.types.iter()).map(|(i, t)| (TypeId(i), t))
    }

    /// The string at `offset` in the string section ("" when out of range).
    pub fn str_at(&self, offset: u32) -> &str {
        self.strings
            .get(offset as usize..)
            .and_then(|s| s.split('\0').next())
            .unwrap_or("")
    }

    /// The name of a type ("" when anonymous or unknown).
    pub fn name(&self, id: TypeId) -> &str {
        self.get(id).map_or("", |t| self.str_at(t.name_off))
    }

    /// Every type named `name`, in id order.
    pub fn find_all(&self, name: &str) -> impl Iterator<Item = TypeId> + '_ {
        let start = self
            .by_name
            .partition_point(|&(off, _)| self.str_at(off) < name);
        let end = self
            .by_name
            .partition_point(|&(off, _)| self.str_at(off) <= name);
        self.by_name[start..end].iter().map(|&(_, id)| id)
    }

    /// The first type named `name` of kind `kind`.
    pub fn find(&self, name: &str, kind: Kind) -> Option<TypeId> {
        self.find_all(name)
            .find(|&id| self.get(id).is_some_and(|t| t.kind() == kind))
    }

    /// Follows typedefs, modifiers and type tags to the underlying type.
    pub fn skip_modifiers(&self, mut id: TypeId) -> Result<TypeId, BtfError> {
        for _ in 0..MAX_CHAIN {
            match self.get(id).map(|t| &t.body) {
                Some(
                    TypeBody::Typedef { target }
                    | TypeBody::Volatile { target }
                    | TypeBody::Const { target }
                    | TypeBody::Restrict { target }
                    | TypeBody::TypeTag { target },
                ) => id = *target,
                _ => return Ok(id),
            }
        }
        Err(BtfError::NoSize {
            type_id: id.0,
            reason: "typedef/modifier chain too long or cyclic",
        })
    }

    /// Size in bytes of a value of type `id` (pointers are 8 bytes: x86-64).
    pub fn size_of(&self, id: TypeId) -> Result<u64, BtfError> {
        let mut id = id;
        let mut mult: u64 = 1;
        for _ in 0..MAX_CHAIN {
            id = self.skip_modifiers(id)?;
            let size = match self.get(id).map(|t| &t.body) {
                Some(TypeBody::Array { elem, len, .. }) => {
                    mult = mult.saturating_mul(u64::from(*len));
                    id = *elem;
                    continue;
                }
                Some(TypeBody::Int { size, .. })
                | Some(TypeBody::Struct { size, .. })
                | Some(TypeBody::Union { size, .. })
                | Some(TypeBody::Enum { size, .. })
                | Some(TypeBody::Datasec { size, .. })
                | Some(TypeBody::Float { size }) => u64::from(*size),
                Some(TypeBody::Ptr { .. }) => 8,
                Some(TypeBody::Var { ty, .. }) => {
                    id = *ty;
                    continue;
                }
                _ => {
                    return Err(BtfError::NoSize {
                        type_id: id.0,
                        reason: "void, forward declaration or function",
                    })
                }
            };
            return Ok(size.saturating_mul(mult));
        }
        Err(BtfError::NoSize {
            type_id: id.0,
            reason: "array/var chain too long or cyclic",
        })
    }
}
