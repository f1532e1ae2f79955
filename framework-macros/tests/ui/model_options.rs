#[ovation::model(rows, without(Serialize))]
pub struct Account {
    pub id: u32,
}

#[ovation::model(row)]
pub enum Plan {
    Free,
}

#[ovation::model(row)]
pub struct Pair(pub u32, pub u32);

fn main() {}
