//! One module per vendor dialect, each a thin translation onto the engine's command set:
//! `native` (`/api/v1`, our own), `sipgate` (`/v2`, `/login/...`). The next dialects
//! (RingCentral, jambonz, api19) go beside them.

pub mod native;
pub mod sipgate;
