// Behavioural model of the Lattice iCE40 SB_MAC16, for simulation only: the subset Lutra
// instantiates (hw/common/mul.py). 16 x 16 multiplier mode (MODE_8x8 = 0), A and B operands each
// two's complement (A_SIGNED/B_SIGNED = 1) or unsigned, the A/B operand registers, the pipeline
// register of the partial products (PIPELINE_16x16_MULT_REG1, modelled as a register of their sum:
// the same values a cycle later) and the 32-bit product register (PIPELINE_16x16_MULT_REG2) each
// bypassed (0) or clocked by CLK (rising edge,
// NEG_TRIGGER = 0) with the common enable CE, hold inputs AHOLD/BHOLD and asynchronous resets
// IRSTTOP (A) / IRSTBOT (B, pipeline, product). O is the product itself (TOPOUTPUT_SELECT =
// BOTOUTPUT_SELECT = 3). The 8 x 8 product registers, the accumulators/adders, C and D and the
// cascade are not modelled: a configuration that uses them stops the simulation.
// Written from the iCE40 DSP Function Usage Guide (Lattice TN1295); the vendor's model is not
// redistributable.
`default_nettype none
module SB_MAC16(CLK, CE, C, A, B, D, AHOLD, BHOLD, CHOLD, DHOLD, IRSTTOP, IRSTBOT, ORSTTOP, ORSTBOT,
                OLOADTOP, OLOADBOT, ADDSUBTOP, ADDSUBBOT, OHOLDTOP, OHOLDBOT, CI, ACCUMCI,
                SIGNEXTIN, O, CO, ACCUMCO, SIGNEXTOUT);
    parameter [0:0] NEG_TRIGGER = 0;
    parameter [0:0] C_REG = 0;
    parameter [0:0] A_REG = 0;
    parameter [0:0] B_REG = 0;
    parameter [0:0] D_REG = 0;
    parameter [0:0] TOP_8x8_MULT_REG = 0;
    parameter [0:0] BOT_8x8_MULT_REG = 0;
    parameter [0:0] PIPELINE_16x16_MULT_REG1 = 0;
    parameter [0:0] PIPELINE_16x16_MULT_REG2 = 0;
    parameter [1:0] TOPOUTPUT_SELECT = 0;
    parameter [1:0] TOPADDSUB_LOWERINPUT = 0;
    parameter [0:0] TOPADDSUB_UPPERINPUT = 0;
    parameter [1:0] TOPADDSUB_CARRYSELECT = 0;
    parameter [1:0] BOTOUTPUT_SELECT = 0;
    parameter [1:0] BOTADDSUB_LOWERINPUT = 0;
    parameter [0:0] BOTADDSUB_UPPERINPUT = 0;
    parameter [1:0] BOTADDSUB_CARRYSELECT = 0;
    parameter [0:0] MODE_8x8 = 0;
    parameter [0:0] A_SIGNED = 0;
    parameter [0:0] B_SIGNED = 0;

    input wire CLK, CE;
    input wire [15:0] C, A, B, D;
    input wire AHOLD, BHOLD, CHOLD, DHOLD, IRSTTOP, IRSTBOT, ORSTTOP, ORSTBOT;
    input wire OLOADTOP, OLOADBOT, ADDSUBTOP, ADDSUBBOT, OHOLDTOP, OHOLDBOT;
    input wire CI, ACCUMCI, SIGNEXTIN;
    output wire [31:0] O;
    output wire CO, ACCUMCO, SIGNEXTOUT;

    initial begin
        if (NEG_TRIGGER != 0 || MODE_8x8 != 0 || TOP_8x8_MULT_REG != 0 || BOT_8x8_MULT_REG != 0
                || TOPOUTPUT_SELECT != 3
                || BOTOUTPUT_SELECT != 3) begin
            $display("SB_MAC16 model: configuration outside the modelled subset");
            $finish;
        end
    end

    reg [15:0] a_reg = 16'd0, b_reg = 16'd0;
    reg [31:0] pipeline_reg = 32'd0, product_reg = 32'd0;

    always @(posedge CLK, posedge IRSTTOP)
        if (IRSTTOP) a_reg <= 16'd0;
        else if (CE && !AHOLD) a_reg <= A;
    always @(posedge CLK, posedge IRSTBOT)
        if (IRSTBOT) b_reg <= 16'd0;
        else if (CE && !BHOLD) b_reg <= B;

    wire [15:0] a = A_REG ? a_reg : A;
    wire [15:0] b = B_REG ? b_reg : B;
    // Each operand extended to 32 bits as its own signedness says; the low 32 bits of the
    // product are then the same for every mix of signed and unsigned operands.
    wire [31:0] a_ext = {{16{A_SIGNED & a[15]}}, a};
    wire [31:0] b_ext = {{16{B_SIGNED & b[15]}}, b};
    wire [31:0] partial = a_ext * b_ext;

    always @(posedge CLK, posedge IRSTBOT)
        if (IRSTBOT) pipeline_reg <= 32'd0;
        else if (CE) pipeline_reg <= partial;
    wire [31:0] product = PIPELINE_16x16_MULT_REG1 ? pipeline_reg : partial;

    always @(posedge CLK, posedge IRSTBOT)
        if (IRSTBOT) product_reg <= 32'd0;
        else if (CE) product_reg <= product;

    assign O = PIPELINE_16x16_MULT_REG2 ? product_reg : product;
    assign CO = 1'b0;
    assign ACCUMCO = 1'b0;
    assign SIGNEXTOUT = a[15];
endmodule
`default_nettype wire
