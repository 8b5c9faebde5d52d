//! File trees: backup of directory trees with their metadata, listing, and restore.

pub mod backup;
pub mod copy;
pub mod fsmeta;
pub mod import_tar;
pub mod restore;
pub mod tar;
