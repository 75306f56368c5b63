"""D4RL-style MuJoCo locomotion datasets made here: SAC behaviour policies (`sac`), their committed
actor weights (`actor`), and the D4RL recipes rolled out from them (`recipes`)."""
