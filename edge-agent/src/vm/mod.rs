//! VM pods' parts that know qemu: the image contract ([`image`]) and qemu itself ([`qemu`]:
//! the accelerator probe, the command line, QMP). The pod worker drives them
//! (`pods/vm.rs`); the runtime runs qemu under the shim like a container.

pub mod dhcp;
pub mod image;
pub mod qemu;
