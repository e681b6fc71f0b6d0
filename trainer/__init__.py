"""Training the planner: expert-guided SFT, Sim-RFT in the chaos lab, Real-RFT from outcomes."""
